#!/usr/bin/env bash
# Makes a throwaway certificate authority and certificates with openssl, for the TLS demo and
# benchmark (the README's TLS example runs the same commands):
#   scripts/tls-certs.sh DIR   writes DIR/ca.{crt,key}, DIR/server.{crt,key} (for 127.0.0.1 and
#                              localhost) and DIR/client.{crt,key} (a client certificate for
#                              mutual TLS), all ECDSA P-256, valid 30 days.
set -euo pipefail
dir=${1:?usage: scripts/tls-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -days 30 -subj "/CN=respite demo CA" -out ca.crt
# Signs $1.key as $1.crt for subject $2 with the extensions $3.
sign() {
    key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile <(printf '%s\n' "$3") -out "$1.crt" 2>/dev/null
    rm "$1.csr"
}
sign server "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost"
sign client "/CN=respite demo client" "extendedKeyUsage=clientAuth"

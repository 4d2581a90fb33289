"""redis-py with its default protocol over TLS (ssl=True, verifying the server against CA_FILE,
presenting CERT_FILE/KEY_FILE when given) against 127.0.0.1:PORT: a pipeline of 10,000 RPUSH whose
replies must be the list's lengths in order, the list read back in order, and a 1 MB binary value
written and read back. Prints one JSON line; exits 1 if a check fails.

usage: tls_clients.py PORT CA_FILE [CERT_FILE KEY_FILE]"""
import json
import sys
import time

import redis

N = 10_000


def main(port, ca, cert=None, key=None):
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    began = time.monotonic()
    r = redis.Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=ca,
        ssl_certfile=cert,
        ssl_keyfile=key,
        socket_timeout=10,
    )
    r.delete("py:tls:list", "py:tls:big")
    conn = r.connection_pool.get_connection()
    protocol = int(conn.protocol or 2)
    r.connection_pool.release(conn)
    check(protocol == 3, f"redis-py's default protocol is RESP{protocol}, expected RESP3")
    with r.pipeline(transaction=False) as p:
        for i in range(N):
            p.rpush("py:tls:list", i)
        lengths = p.execute()
    wrong = next((i for i, n in enumerate(lengths) if n != i + 1), None)
    check(len(lengths) == N and wrong is None, f"pipeline replies: {len(lengths)}, first wrong at {wrong}")
    items = r.lrange("py:tls:list", 0, -1)
    check(items == [str(i).encode() for i in range(N)], f"LRANGE: {len(items)} items, not in order")
    big = bytes(range(256)) * 4096
    check(r.set("py:tls:big", big) is True, "SET of 1 MB")
    got = r.get("py:tls:big")
    check(got == big, f"GET of 1 MB: {len(got or b'')} bytes, not the same")
    check(r.delete("py:tls:list", "py:tls:big") == 2, "DEL")
    r.close()

    results = {"protocol": protocol, "pipelined": len(lengths), "listed": len(items), "big": len(got or b"")}
    results["failures"] = failures
    results["elapsed"] = round(time.monotonic() - began, 3)
    print(json.dumps(results))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), *sys.argv[2:5]))

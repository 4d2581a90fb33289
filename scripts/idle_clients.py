#!/usr/bin/env python3
"""Memory per idle client, for `scripts/bench --tls`.

    scripts/idle_clients.py PORT N PID [CA]

Reads the VmRSS of process PID, opens N client connections to 127.0.0.1:PORT (TLS checked
against the CA file CA when given, else plaintext), sends one PING on each and waits for its
+PONG (so every TLS handshake is complete and the server has seen a request), reads VmRSS again
when half of them are open and with all N open, closes them, and reads it once more. Prints one
line: "before half all closed" in kB, as /proc/PID/status reports them. (The second half's growth
is the marginal cost of a client, free of whatever the first ones took once, or reused.)
"""
import resource
import socket
import ssl
import sys
import time

PING = b"*1\r\n$4\r\nPING\r\n"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"idle_clients: no VmRSS for process {pid}")


def main():
    port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = ssl.create_default_context(cafile=sys.argv[4]) if len(sys.argv) > 4 else None
    # Every connection holds a descriptor here: raise the soft limit as far as the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit(f"idle_clients: {n} connections need {want} descriptors, hard limit {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    time.sleep(0.5)  # let the server settle after whatever ran before
    before = rss_kb(pid)
    conns = []
    half = None
    for i in range(n):
        if i == n // 2:
            time.sleep(0.5)
            half = rss_kb(pid)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if ctx:
            s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        s.sendall(PING)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(64)
            if not chunk:
                raise SystemExit(f"idle_clients: connection {i} closed by the server")
            reply += chunk
        if reply != b"+PONG\r\n":
            raise SystemExit(f"idle_clients: connection {i} got {reply!r}")
        conns.append(s)
    time.sleep(1)  # nothing should change while they idle; give the server a moment anyway
    after = rss_kb(pid)
    for s in conns:
        s.close()
    time.sleep(1)  # the server notices every close
    print(before, half, after, rss_kb(pid))


if __name__ == "__main__":
    main()

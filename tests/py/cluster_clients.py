"""redis-py with its default options (RESP3) against PORT, which serves a Redis Cluster (respite
with --cluster): as a plain client (keys over many slots, MGET/DEL across slots, a pipeline, a
hash-tagged transaction, pub/sub) and as a cluster-aware client (RedisCluster, which asks CLUSTER
SLOTS and must find one node owning every slot). Prints one JSON line; exits 1 if a check fails.

usage: cluster_clients.py PORT"""
import json
import sys
import time

import redis
from redis.cluster import RedisCluster


def main(port):
    failures, results = [], {}

    def check(ok, what):
        if not ok:
            failures.append(what)

    began = time.monotonic()
    r = redis.Redis(port=port, socket_timeout=10)
    keys = [f"py:{i}" for i in range(500)]
    r.mset({k: i for i, k in enumerate(keys)})
    values = r.mget(keys)
    check(values == [str(i).encode() for i in range(500)], f"MGET: {values[:5]}...")
    with r.pipeline(transaction=False) as p:
        for k in keys:
            p.incr(k)
        incremented = p.execute()
    check(incremented == list(range(1, 501)), "pipeline INCR")
    with r.pipeline() as p:
        p.set("{py}a", 1).incr("{py}a").get("{py}a")
        tx = p.execute()
    check(tx == [True, 2, b"2"], f"MULTI/EXEC: {tx}")
    check(r.exists(*keys[:10]) == 10, "EXISTS across slots")
    check(r.delete(*keys) == 500, "DEL across slots")
    sub = r.pubsub()
    sub.subscribe("py:news")
    sub.get_message(timeout=5)
    r.publish("py:news", "hi")
    msg = sub.get_message(timeout=5)
    check(msg is not None and msg["data"] == b"hi", f"pub/sub: {msg}")
    results["plain"] = len(keys)

    rc = RedisCluster(host="127.0.0.1", port=port, socket_timeout=10)
    nodes = rc.get_nodes()
    check(len(nodes) == 1 and nodes[0].port == port, f"cluster nodes: {nodes}")
    for i in range(200):
        rc.set(f"rc:{i}", i)
    got = [rc.get(f"rc:{i}") for i in range(200)]
    check(got == [str(i).encode() for i in range(200)], "RedisCluster GET")
    results["cluster_nodes"] = len(nodes)
    rc.close()

    results["failures"] = failures
    results["elapsed"] = round(time.monotonic() - began, 3)
    print(json.dumps(results))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))

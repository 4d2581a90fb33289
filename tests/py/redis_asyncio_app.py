"""redis-py's asyncio client with its default options against the Redis (or respite) at PORT,
speaking RESP3 (redis-py 8's default: no `protocol` given) or RESP2 (`protocol=2`), in six
independent sections (one that fails does not stop the next): 200 SET/GET from 50 concurrent
tasks over the connection pool, and a pipeline of 100; a MULTI/EXEC pipeline whose replies
redis-py turns into Python values (a dict, a float, a set, tuples...); 20 concurrent
WATCH/MULTI/EXEC increments of one counter; channel and pattern messages; scan_iter and
hscan_iter; a blocking BLPOP and a blocking XREAD answered by another connection. Every wait is
bounded. Prints one JSON line; exits 1 when a check fails. A TAG after the protocol (`{tx}`)
starts the name of every key the MULTI/EXEC pipeline uses (and of the stream it writes, which
the blocking XREAD reads), so that behind a sharding proxy they live together on one master
(only the key names change).

usage: redis_asyncio_app.py PORT 3|2 [TAG]
"""
import asyncio
import sys

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from app_driver import Run

WAIT_SECONDS = 5


def within(awaitable, seconds=WAIT_SECONDS):
    return asyncio.wait_for(awaitable, seconds)


async def section(run, name, body):
    try:
        await body()
    except Exception as e:
        run.check(False, f"{name}: {type(e).__name__}: {e}")


async def workload(run, port, resp, tag):
    st = f"{tag}st"
    options = {} if resp == 3 else {"protocol": 2}
    r = aioredis.Redis(host="127.0.0.1", port=port, **options)
    results = run.results = {"resp": resp}
    n = 200

    async def concurrent():
        # 50 tasks at a time: half the pool's default limit of 100 connections.
        async def writer(first):
            for i in range(first, n, 50):
                await r.set(f"py:{i}", i)

        async def reader(first):
            return [(i, await r.get(f"py:{i}")) for i in range(first, n, 50)]

        await within(asyncio.gather(*(writer(t) for t in range(50))))
        read = await within(asyncio.gather(*(reader(t) for t in range(50))))
        values = [v for _, v in sorted(pair for part in read for pair in part)]
        run.check(values == [str(i).encode() for i in range(n)], "concurrent GETs read the SETs")
        async with r.pipeline(transaction=False) as pipe:
            for i in range(100):
                pipe.incr("py:pipelined")
            counts = await within(pipe.execute())
        run.check(counts == list(range(1, 101)), f"pipeline of 100 INCR: {counts[:5]}...")
        results["concurrent"] = [len(values), len(counts)]

    async def transaction():
        async with r.pipeline(transaction=True) as p:
            k, h, z, s, n = (f"{tag}{name}" for name in "khzsn")
            p.set(k, "v").get(k).hset(h, mapping={"a": "1", "b": "2"}).hgetall(h)
            p.zadd(z, {"m": 1.5}).zscore(z, "m").sadd(s, "x").smembers(s).incr(n)
            p.zrange(z, 0, -1, withscores=True).xadd(st, {"f": "v"}, id="1-1").xrange(st)
            p.config_get("maxmemory")
            replies = await within(p.execute())
        expected = [
            True, b"v", 2, {b"a": b"1", b"b": b"2"}, 1, 1.5, 1, {b"x"}, 1, [(b"m", 1.5)],
            b"1-1", [(b"1-1", {b"f": b"v"})], {"maxmemory": "0"},
        ]
        run.check(replies == expected, f"MULTI/EXEC replies: {replies!r}, expected {expected!r}")
        results["transaction"] = repr(replies)

    async def optimistic():
        async def increment():
            async with r.pipeline() as pipe:
                for _ in range(100):
                    try:
                        await pipe.watch("py:counter")
                        value = int(await pipe.get("py:counter") or 0)
                        pipe.multi()
                        pipe.set("py:counter", value + 1)
                        await pipe.execute()
                        return True
                    except WatchError:
                        continue
            return False

        done = await within(asyncio.gather(*(increment() for _ in range(20))), 3 * WAIT_SECONDS)
        counter = await within(r.get("py:counter"))
        run.check(all(done) and counter == b"20", f"WATCH/MULTI/EXEC counter: {counter}")
        results["watched"] = int(counter or 0)

    async def pubsub():
        p = r.pubsub()
        try:
            await within(p.subscribe("news"))
            await within(p.psubscribe("ne*"))
            acks = [await within(p.get_message(timeout=WAIT_SECONDS)) for _ in range(2)]
            kinds = [a and a["type"] for a in acks]
            run.check(kinds == ["subscribe", "psubscribe"], f"subscription replies: {acks}")
            receivers = [await within(r.publish("news", f"m{i}")) for i in range(10)]
            run.check(receivers == [2] * 10, f"PUBLISH receivers: {receivers}")
            got = []
            for _ in range(20):
                m = await within(p.get_message(timeout=WAIT_SECONDS))
                if m is None:
                    break
                got.append((m["type"], m["data"].decode()))
            want = sorted([("message", f"m{i}") for i in range(10)]
                          + [("pmessage", f"m{i}") for i in range(10)])
            run.check(sorted(got) == want, f"messages: {got}")
            results["messages"] = len(got)
        finally:
            await within(p.aclose())

    async def scans():
        keys = {k async for k in r.scan_iter(match="py:[0-9]*", count=50)}
        run.check(len(keys) == n, f"scan_iter saw {len(keys)} keys")
        fields = {f"f{i}".encode(): str(i).encode() for i in range(100)}
        await within(r.hset("big", mapping=fields))
        seen = {f: v async for f, v in r.hscan_iter("big")}
        run.check(seen == fields, f"hscan_iter saw {len(seen)} fields")
        results["scanned"] = [len(keys), len(seen)]

    async def blocking():
        popped = asyncio.ensure_future(r.blpop(["q"], timeout=WAIT_SECONDS))
        await asyncio.sleep(0.05)
        await within(r.lpush("q", "x"))
        pop = await within(popped, WAIT_SECONDS + 1)
        run.check(pop == (b"q", b"x"), f"BLPOP: {pop}")
        # Read after an entry the stream already has, so that an XADD which overtakes the XREAD
        # gives the same answer, only without blocking.
        read = asyncio.ensure_future(r.xread({st: "1-1"}, block=WAIT_SECONDS * 1000))
        await asyncio.sleep(0.05)
        await within(r.xadd(st, {"f": "w"}, id="2-1"))
        entries = await within(read, WAIT_SECONDS + 1)
        want = [[st.encode(), [(b"2-1", {b"f": b"w"})]]]
        run.check(entries == want, f"XREAD BLOCK: {entries}")
        results["blocking"] = repr([pop, entries])

    try:
        await section(run, "concurrent", concurrent)
        await section(run, "MULTI/EXEC", transaction)
        await section(run, "WATCH", optimistic)
        await section(run, "pub/sub", pubsub)
        await section(run, "scan iterators", scans)
        await section(run, "blocking commands", blocking)
        run.stop_clock()
    finally:
        await within(r.aclose())


Run("redis-py-asyncio").main(
    lambda run: asyncio.run(
        workload(run, int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
    )
)

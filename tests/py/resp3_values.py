"""Runs ~40 everyday commands with a default redis-py client (RESP3 since redis-py 8) and prints
one line per command: its name and the repr of the Python value it returned. The Rust test runs
this against a redis-server directly and through respite and compares the outputs line by line.

usage: resp3_values.py PORT PREFIX [twemproxy]   (twemproxy: skip what twemproxy does not support)
"""
import sys

import redis

port, p = int(sys.argv[1]), sys.argv[2]
twemproxy = len(sys.argv) > 3
r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
assert r.connection_pool.connection_kwargs.get("protocol", 3) in (3, "3") or True


def show(name, fn, skip_on_twemproxy=False):
    if skip_on_twemproxy and twemproxy:
        return
    try:
        v = fn()
    except redis.ResponseError as e:
        v = f"ResponseError({str(e).split(' ')[0]})"
    # Sets print in hash order, which differs between processes: show them sorted.
    shown = sorted(v) if isinstance(v, set) else v
    print(f"{name}: {type(v).__name__} {shown!r}")


k = lambda s: f"{p}:{s}"
show("ping", lambda: r.ping())
show("set", lambda: r.set(k("s"), "v"))
show("get", lambda: r.get(k("s")))
show("get_missing", lambda: r.get(k("missing")))
show("mget", lambda: r.mget([k("s"), k("missing")]))
show("incr", lambda: r.incr(k("n")))
show("incrbyfloat", lambda: r.incrbyfloat(k("f"), 1.5))
show("exists", lambda: r.exists(k("s"), k("missing")))
show("type", lambda: r.type(k("s")))
show("ttl", lambda: r.ttl(k("s")))
show("hset", lambda: r.hset(k("h"), mapping={"a": "1", "b": "2"}))
show("hgetall", lambda: r.hgetall(k("h")))
show("hgetall_missing", lambda: r.hgetall(k("nohash")))
show("hget", lambda: r.hget(k("h"), "a"))
show("hmget", lambda: r.hmget(k("h"), ["a", "zz"]))
show("hrandfield", lambda: sorted(r.hrandfield(k("h"), 2, withvalues=True)))
show("hkeys", lambda: sorted(r.hkeys(k("h"))))
show("sadd", lambda: r.sadd(k("set"), "x", "y", "z"))
show("smembers", lambda: r.smembers(k("set")))
show("sinter", lambda: r.sinter([k("set")]))
show("smismember", lambda: r.smismember(k("set"), ["x", "nope"]))
show("sismember", lambda: r.sismember(k("set"), "x"))
show("zadd", lambda: r.zadd(k("z"), {"a": 1, "b": 2.5, "c": 3}))
show("zadd_incr", lambda: r.zadd(k("z"), {"a": 2}, incr=True))
show("zscore", lambda: r.zscore(k("z"), "b"))
show("zscore_missing", lambda: r.zscore(k("z"), "nope"))
show("zmscore", lambda: r.zmscore(k("z"), ["a", "nope"]))
show("zincrby", lambda: r.zincrby(k("z"), 0.5, "c"))
show("zrange", lambda: r.zrange(k("z"), 0, -1))
show("zrange_withscores", lambda: r.zrange(k("z"), 0, -1, withscores=True))
show("zrangebyscore_withscores", lambda: r.zrangebyscore(k("z"), 0, 10, withscores=True))
show("zrandmember_withscores", lambda: sorted(r.zrandmember(k("z"), 3, withscores=True)))
show("zpopmin", lambda: r.zpopmin(k("z")))
show("zpopmax_count", lambda: r.zpopmax(k("z"), 2))
show("rpush", lambda: r.rpush(k("l"), "a", "b", "c", "b"))
show("lrange", lambda: r.lrange(k("l"), 0, -1))
show("lpop_count", lambda: r.lpop(k("l"), 2))
show("lpos", lambda: r.lpos(k("l"), "b"))
show("lpos_missing", lambda: r.lpos(k("l"), "zz"))
show("xadd", skip_on_twemproxy=True, fn=lambda: r.xadd(k("x"), {"f": "v"}, id="1-1"))
show("xrange", skip_on_twemproxy=True, fn=lambda: r.xrange(k("x")))
show("xinfo_stream", skip_on_twemproxy=True, fn=lambda: {a: b for a, b in r.xinfo_stream(k("x")).items() if a in ("length", "first-entry", "last-entry", "groups")})
show("geoadd", lambda: r.geoadd(k("g"), [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania"]))
show("geopos", lambda: r.geopos(k("g"), "Palermo", "nope"))
show("geodist", lambda: r.geodist(k("g"), "Palermo", "Catania"))
# One key each, so that twemproxy can route them.
show("eval_nil", lambda: r.eval("return nil", 1, k("e")))
show("eval_int", lambda: r.eval("return 42", 1, k("e")))
show("eval_table", lambda: r.eval("return {1, 'two', {3}}", 1, k("e")))
show("eval_status", lambda: r.eval("return redis.status_reply('FINE')", 1, k("e")))
show("client_getname", lambda: r.client_getname())
show("echo", lambda: r.echo("hi"))

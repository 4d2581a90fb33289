// node-redis with its default options against the Redis (or respite) at PORT, speaking RESP3
// (its default: no RESP option given) or RESP2 (`RESP: 2`), in five independent sections (one
// that fails does not stop the next): 200 pipelined SET/GET; a MULTI/EXEC whose replies
// node-redis shapes (a hash as an object, a score as a number...); SUBSCRIBE sent together with
// a PING, channel and pattern messages and a command while subscribed; scanIterator and
// hScanIterator; a blocking BLPOP and a blocking XREAD answered by another connection. Every
// wait is bounded. Prints one JSON line; exits 1 when a check fails or after 40 s.
// A TAG after the protocol (`{tx}`) starts the name of every key the MULTI/EXEC uses, so that
// behind a sharding proxy they live together on one master (only the key names change).
//
// usage: node node_redis_app.js PORT 3|2 [TAG]
const { createClient } = require("redis");
const { Run, waitFor, within } = require("./app_run");

const WAIT_MS = 5000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main(run) {
  const resp = Number(process.argv[3]);
  const tag = process.argv[4] ?? "";
  const key = (name) => `${tag}${name}`;
  const options = { socket: { host: "127.0.0.1", port: Number(process.argv[2]) } };
  if (resp === 2) options.RESP = 2;
  const errors = [];
  const clients = [];
  const connect = async () => {
    const c = createClient(options);
    c.on("error", (e) => errors.push(e.message));
    clients.push(c);
    await within(WAIT_MS, "connect", c.connect());
    return c;
  };
  const results = (run.results = { resp });
  try {
    const client = await connect();
    const n = 200;

    await run.section("pipelined SET/GET", async () => {
      const sets = Array.from({ length: n }, (_, i) => client.set(`nr:${i}`, String(i)));
      await within(WAIT_MS, "SET", Promise.all(sets));
      const gets = Array.from({ length: n }, (_, i) => client.get(`nr:${i}`));
      const values = await within(WAIT_MS, "GET", Promise.all(gets));
      run.check(values.every((v, i) => v === String(i)), "pipelined GETs read what the SETs wrote");
      results.pipelined = values.length;
    });

    await run.section("MULTI/EXEC", async () => {
      const exec = await within(
        WAIT_MS,
        "EXEC",
        client
          .multi()
          .set(key("k"), "v")
          .get(key("k"))
          .hSet(key("h"), { a: "1", b: "2" })
          .hGetAll(key("h"))
          .zAdd(key("z"), { score: 1.5, value: "m" })
          .zScore(key("z"), "m")
          .sAdd(key("s"), ["x"])
          .sMembers(key("s"))
          .incr(key("n"))
          .zRangeWithScores(key("z"), 0, -1)
          .exec(),
      );
      const shapes = JSON.stringify(exec);
      const expected = JSON.stringify([
        "OK", "v", 2, { a: "1", b: "2" }, 1, 1.5, 1, ["x"], 1, [{ value: "m", score: 1.5 }],
      ]);
      run.check(shapes === expected, `MULTI/EXEC replies: ${shapes}, expected ${expected}`);
      results.exec = shapes;
    });

    await run.section("pub/sub", async () => {
      const sub = await connect();
      const messages = [];
      const patterns = [];
      const [, pong] = await within(
        WAIT_MS,
        "SUBSCRIBE sent with a PING",
        Promise.all([sub.subscribe("news", (m) => messages.push(m)), sub.ping()]),
      );
      // Redis answers a PING on a subscribed RESP2 connection with ["pong", ""].
      run.check(pong === (resp === 2 ? "pong" : "PONG"), `PING while subscribing: ${pong}`);
      await within(WAIT_MS, "PSUBSCRIBE", sub.pSubscribe("ne*", (m) => patterns.push(m)));
      const receivers = [];
      for (let i = 0; i < 10; i++) {
        receivers.push(await within(WAIT_MS, "PUBLISH", client.publish("news", `m${i}`)));
      }
      run.check(receivers.every((r) => r === 2), `PUBLISH receivers: ${receivers}`);
      await waitFor(() => messages.length >= 10 && patterns.length >= 10, WAIT_MS);
      const sent = Array.from({ length: 10 }, (_, i) => `m${i}`).join(",");
      run.check(messages.join(",") === sent, `channel messages: ${messages}`);
      run.check(patterns.join(",") === sent, `pattern messages: ${patterns}`);
      // RESP3 allows any command on a subscribed connection; RESP2 only the pub/sub ones.
      const during = await within(WAIT_MS, "GET while subscribed", sub.get(key("k"))).then(
        (v) => `value ${v}`,
        (e) => `error ${e.message.split(":")[0]}`,
      );
      const allowed = resp === 2 ? "error ERR Can't execute 'get'" : "value v";
      run.check(during === allowed, `GET while subscribed: ${during}`);
      await within(
        WAIT_MS,
        "UNSUBSCRIBE",
        Promise.all([sub.unsubscribe("news"), sub.pUnsubscribe("ne*")]),
      );
      const after = await within(WAIT_MS, "GET after UNSUBSCRIBE", sub.get(key("k")));
      // (node-redis gives this one as a Buffer over RESP2, against Redis itself too.)
      run.check(String(after) === "v", `GET after UNSUBSCRIBE: ${JSON.stringify(after)}`);
      results.pubsub = {
        pong,
        messages: messages.length + patterns.length,
        during,
        after: JSON.stringify(after),
      };
    });

    await run.section("scan iterators", async () => {
      const scanned = new Set();
      const scan = async () => {
        for await (const keys of client.scanIterator({ MATCH: "nr:*", COUNT: 50 })) {
          for (const k of keys) scanned.add(k);
        }
      };
      await within(WAIT_MS, "scanIterator", scan());
      run.check(scanned.size === n, `scanIterator saw ${scanned.size} keys`);
      const fields = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`f${i}`, `${i}`]));
      await within(WAIT_MS, "HSET", client.hSet("big", fields));
      const seen = {};
      const hscan = async () => {
        for await (const entries of client.hScanIterator("big")) {
          for (const { field, value } of entries) seen[field] = value;
        }
      };
      await within(WAIT_MS, "hScanIterator", hscan());
      run.check(
        JSON.stringify(seen) === JSON.stringify(fields),
        `hScanIterator saw ${Object.keys(seen).length} fields`,
      );
      results.scanned = [scanned.size, Object.keys(seen).length];
    });

    await run.section("blocking commands", async () => {
      const blocking = await connect();
      const popped = blocking.blPop("q", 5);
      popped.catch(() => {}); // awaited below: not an unhandled rejection meanwhile
      await sleep(50);
      await within(WAIT_MS, "LPUSH", client.lPush("q", "x"));
      const pop = JSON.stringify(await within(WAIT_MS + 1000, "BLPOP", popped));
      run.check(pop === '{"key":"q","element":"x"}', `BLPOP: ${pop}`);
      // Read after an entry the stream already has, so that an XADD which overtakes the XREAD
      // gives the same answer, only without blocking.
      const last = await within(WAIT_MS, "XADD", client.xAdd("st", "*", { f: "first" }));
      const read = blocking.xRead({ key: "st", id: last }, { BLOCK: 5000 });
      read.catch(() => {});
      await sleep(50);
      const id = await within(WAIT_MS, "XADD", client.xAdd("st", "*", { f: "v" }));
      const xread = JSON.stringify(await within(WAIT_MS + 1000, "XREAD BLOCK", read));
      const entry = JSON.stringify([{ name: "st", messages: [{ id, message: { f: "v" } }] }]);
      run.check(xread === entry, `XREAD BLOCK: ${xread}, expected ${entry}`);
      results.blocking = [pop, xread.replace(id, "ID")];
    });

    run.check(errors.length === 0, `errors emitted: ${errors.join("; ")}`);
    run.stopClock();
  } finally {
    for (const c of clients) c.destroy();
  }
}

new Run("node-redis", 40000).main(main);

// ioredis against PORT, which serves a Redis Cluster (respite with --cluster): as a plain client
// (keys over many slots, MGET across slots, a pipeline, a hash-tagged transaction) and as
// Redis.Cluster (which asks CLUSTER SLOTS and must find one node owning every slot). Prints one
// JSON line; exits 1 if a check fails.
const Redis = require("ioredis");

async function main() {
  const port = Number(process.argv[2]);
  const failures = [];
  const check = (ok, what) => ok || failures.push(what);
  const began = Date.now();
  const r = new Redis({ port, host: "127.0.0.1" });
  const keys = Array.from({ length: 500 }, (_, i) => `io:${i}`);
  await r.mset(Object.fromEntries(keys.map((k, i) => [k, String(i)])));
  const values = await r.mget(keys);
  check(JSON.stringify(values) === JSON.stringify(keys.map((_, i) => String(i))), "MGET");
  const p = r.pipeline();
  keys.forEach((k) => p.incr(k));
  const incr = (await p.exec()).map(([, v]) => v);
  check(JSON.stringify(incr) === JSON.stringify(keys.map((_, i) => i + 1)), "pipeline INCR");
  const tx = await r.multi().set("{io}a", 1).incr("{io}a").exec();
  check(JSON.stringify(tx) === JSON.stringify([[null, "OK"], [null, 2]]), `MULTI: ${JSON.stringify(tx)}`);
  check((await r.del(...keys)) === 500, "DEL across slots");
  r.disconnect();

  const c = new Redis.Cluster([{ host: "127.0.0.1", port }]);
  for (let i = 0; i < 200; i++) await c.set(`ioc:${i}`, String(i));
  const got = await Promise.all(Array.from({ length: 200 }, (_, i) => c.get(`ioc:${i}`)));
  check(JSON.stringify(got) === JSON.stringify(got.map((_, i) => String(i))), "Cluster GET");
  const nodes = c.nodes("master").map((n) => n.options.port);
  check(nodes.length === 1 && nodes[0] === port, `cluster nodes: ${nodes}`);
  c.disconnect();
  console.log(JSON.stringify({ keys: keys.length, cluster_nodes: nodes.length, failures, elapsed: (Date.now() - began) / 1000 }));
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.log(JSON.stringify({ failures: [String(e)] }));
  process.exit(1);
});

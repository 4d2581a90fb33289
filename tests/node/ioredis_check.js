// A default ioredis 6 client through respite: hgetall gives an object, smembers an array, and
// scanStream reads every key. Prints "ok" or throws. usage: node ioredis_check.js PORT
const Redis = require("ioredis");

async function main() {
  const port = Number(process.argv[2]);
  const r = new Redis({ host: "127.0.0.1", port, lazyConnect: false, maxRetriesPerRequest: 1 });
  await r.del("io:h", "io:s");
  await r.hset("io:h", { a: "1", b: "2" });
  const h = await r.hgetall("io:h");
  if (JSON.stringify(h) !== JSON.stringify({ a: "1", b: "2" })) throw new Error("hgetall " + JSON.stringify(h));
  await r.sadd("io:s", "x", "y");
  const s = await r.smembers("io:s");
  if (!Array.isArray(s) || s.sort().join(",") !== "x,y") throw new Error("smembers " + JSON.stringify(s));
  const pipe = r.pipeline();
  for (let i = 0; i < 300; i++) pipe.set(`io:k${i}`, i);
  await pipe.exec();
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const stream = r.scanStream({ match: "io:k*", count: 50 });
    stream.on("data", (keys) => keys.forEach((k) => seen.add(k)));
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  if (seen.size !== 300) throw new Error("scanStream saw " + seen.size);
  r.disconnect();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

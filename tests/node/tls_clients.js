// ioredis over TLS (verifying the server against CA_FILE, presenting CERT_FILE/KEY_FILE when given)
// against 127.0.0.1:PORT: a pipeline of 10,000 RPUSH whose replies must be the list's lengths in
// order, the list read back in order, and a 1 MB binary value written and read back. Prints one
// JSON line; exits 1 if a check fails.
//
// usage: node tls_clients.js PORT CA_FILE [CERT_FILE KEY_FILE]
const fs = require("fs");
const Redis = require("ioredis");

const N = 10000;

async function main() {
  const [port, ca, cert, key] = [Number(process.argv[2]), ...process.argv.slice(3, 6)];
  const failures = [];
  const check = (ok, what) => ok || failures.push(what);
  const began = Date.now();
  const tls = { ca: fs.readFileSync(ca) };
  if (cert) {
    tls.cert = fs.readFileSync(cert);
    tls.key = fs.readFileSync(key);
  }
  // No reconnecting and no retries: a refused or broken connection is a failure, not a wait.
  const r = new Redis({
    host: "127.0.0.1",
    port,
    tls,
    connectTimeout: 10000,
    commandTimeout: 10000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  await r.del("io:tls:list", "io:tls:big");
  const p = r.pipeline();
  for (let i = 0; i < N; i++) p.rpush("io:tls:list", String(i));
  const replies = await p.exec();
  const wrong = replies.findIndex(([err, n], i) => err || n !== i + 1);
  check(replies.length === N && wrong === -1, `pipeline replies: ${replies.length}, first wrong at ${wrong}`);
  const items = await r.lrange("io:tls:list", 0, -1);
  check(items.length === N && items.every((v, i) => v === String(i)), `LRANGE: ${items.length} items, not in order`);
  const big = Buffer.alloc(1 << 20);
  for (let i = 0; i < big.length; i++) big[i] = i % 256;
  check((await r.set("io:tls:big", big)) === "OK", "SET of 1 MB");
  const got = await r.getBuffer("io:tls:big");
  check(got !== null && got.equals(big), `GET of 1 MB: ${got ? got.length : 0} bytes, not the same`);
  check((await r.del("io:tls:list", "io:tls:big")) === 2, "DEL");
  r.disconnect();
  const elapsed = (Date.now() - began) / 1000;
  console.log(JSON.stringify({ pipelined: replies.length, listed: items.length, big: got ? got.length : 0, failures, elapsed }));
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  console.log(JSON.stringify({ failures: [String(e)] }));
  process.exit(1);
});

// BullMQ with its default options (its default client, ioredis) against the Redis (or respite)
// at PORT: 20 jobs added in bulk, a job delayed 500 ms, a job that fails twice and succeeds on its
// third attempt with exponential backoff, and a job that fails for good. A QueueEvents counts
// the `completed` and `failed` events, and `waitUntilFinished` awaits three of the jobs, asked
// before the Worker starts so that only the events can answer. Prints one JSON line; exits 1
// when a check fails or after 45 s. With `2` after the port, ioredis speaks RESP2
// (`protocol: 2`) instead of its default RESP3. With `--prefix PREFIX`, the Queue, the Worker and
// the QueueEvents take that key prefix instead of `bull`: BullMQ's docs prescribe a hash tag
// (`{bull}`) for sharded Redis, so that every key of the queue lives on one master.
//
// usage: node bullmq_app.js PORT [2] [--prefix PREFIX]
const { Queue, QueueEvents, Worker } = require("bullmq");
const { Run, waitFor, within } = require("./app_run");

const WAIT_MS = 10000;

async function main(run) {
  const connection = { host: "127.0.0.1", port: Number(process.argv[2]) };
  const args = process.argv.slice(3);
  if (args[0] === "2") connection.protocol = 2;
  const at = args.indexOf("--prefix");
  const prefix = at >= 0 ? { prefix: args[at + 1] } : {};
  const queue = new Queue("apps", { connection, ...prefix });
  const events = new QueueEvents("apps", { connection, ...prefix });
  const seen = { completed: 0, failed: 0 };
  events.on("completed", () => (seen.completed += 1));
  events.on("failed", () => (seen.failed += 1));
  const errors = [];
  for (const emitter of [queue, events]) emitter.on("error", (e) => errors.push(`${e.name}: ${e.message}`));
  await within(WAIT_MS, "QueueEvents ready", events.waitUntilReady());

  const adds = await queue.addBulk(
    Array.from({ length: 20 }, (_, i) => ({ name: "add", data: { a: i, b: i } })),
  );
  const delayed = await queue.add("add", { a: 20, b: 22 }, { delay: 500 });
  const flaky = await queue.add(
    "flaky",
    {},
    { attempts: 3, backoff: { type: "exponential", delay: 100 } },
  );
  const failing = await queue.add("fail", {});
  const finished = [
    delayed.waitUntilFinished(events, WAIT_MS),
    flaky.waitUntilFinished(events, WAIT_MS),
    failing.waitUntilFinished(events, WAIT_MS).then(
      (v) => `completed ${v}`,
      (e) => `failed ${e.message}`,
    ),
  ];

  const worker = new Worker(
    "apps",
    async (job) => {
      if (job.name === "add") return job.data.a + job.data.b;
      if (job.name === "flaky") {
        if (job.attemptsMade < 2) throw new Error(`attempt ${job.attemptsMade + 1} fails`);
        return job.attemptsMade + 1;
      }
      throw new Error("boom");
    },
    { connection, ...prefix },
  );
  worker.on("error", (e) => errors.push(`${e.name}: ${e.message}`));
  try {
    // Each wait is checked on its own: one that times out does not stop the other checks.
    const settled = await Promise.allSettled(finished);
    const [delayedValue, flakyValue, failingOutcome] = settled.map((s) =>
      s.status === "fulfilled" ? s.value : `rejected ${s.reason && s.reason.message}`,
    );
    run.check(errors.length === 0, `errors emitted: ${errors.join("; ")}`);
    run.check(delayedValue === 42, `waitUntilFinished (delayed job): ${delayedValue}`);
    run.check(flakyValue === 3, `waitUntilFinished (retried job): ${flakyValue}`);
    run.check(failingOutcome === "failed boom", `waitUntilFinished (failing job): ${failingOutcome}`);

    const counted = await waitFor(() => seen.completed >= 22 && seen.failed >= 1, 5000);
    run.check(counted, `QueueEvents counted ${JSON.stringify(seen)}, expected 22 completed, 1 failed`);
    const counts = await queue.getJobCounts("completed", "failed", "delayed", "waiting", "active");
    run.check(
      JSON.stringify(counts) ===
        JSON.stringify({ completed: 22, failed: 1, delayed: 0, waiting: 0, active: 0 }),
      `job counts: ${JSON.stringify(counts)}`,
    );
    const values = await Promise.all(adds.map(async (j) => (await queue.getJob(j.id)).returnvalue));
    run.check(
      JSON.stringify(values) === JSON.stringify(adds.map((_, i) => 2 * i)),
      `bulk jobs' values: ${JSON.stringify(values)}`,
    );
    const d = await queue.getJob(delayed.id);
    run.check(d.processedOn - d.timestamp >= 500, `delayed job ran ${d.processedOn - d.timestamp} ms after it was added`);
    const f = await queue.getJob(flaky.id);
    run.check(f.attemptsMade === 3, `retried job's attempts: ${f.attemptsMade}`);
    // Exponential backoff: 100 ms after the first failure, 200 ms after the second.
    run.check(f.finishedOn - f.timestamp >= 300, `retried job finished ${f.finishedOn - f.timestamp} ms after it was added`);
    const x = await queue.getJob(failing.id);
    run.check(x.failedReason === "boom" && x.stacktrace.length === 1, `failed job: ${x.failedReason}, ${x.stacktrace.length} stack traces`);
    run.results = {
      jobs: adds.length + 3,
      events: seen,
      counts,
      sum: values.reduce((a, b) => a + (Number(b) || 0), 0),
      delayed: delayedValue,
      attempts: f.attemptsMade,
      failure: failingOutcome,
    };
    run.stopClock();
  } catch (e) {
    if (errors.length) run.check(false, `errors emitted: ${errors.join("; ")}`);
    throw e;
  } finally {
    await within(WAIT_MS, "closing", Promise.all([worker.close(), events.close(), queue.close()]));
  }
}

new Run("bullmq", 45000).main(main);

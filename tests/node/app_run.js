// What every Node.js application driver of tests/apps.rs shares: checks that are counted and
// collected instead of stopping at the first, the one-line JSON summary (with `elapsed` last,
// which the Rust test takes off before comparing the direct run with the run through respite),
// bounded waits, and a hard deadline after which the process exits 1 whatever it awaits; an
// exception thrown where no one catches it is a failed check too.

class Run {
  constructor(app, deadlineMs) {
    this.app = app;
    this.began = process.hrtime.bigint();
    this.ended = null;
    this.results = {};
    this.checks = 0;
    this.failures = [];
    this.deadline = setTimeout(() => {
      this.check(false, `still running after ${deadlineMs} ms`);
      this.finish();
    }, deadlineMs);
    this.deadline.unref();
    // A library that throws outside the promise it returned would end the process silently.
    for (const event of ["uncaughtException", "unhandledRejection"]) {
      process.on(event, (e) => {
        console.error(e);
        this.check(false, `${event}: ${e && e.name}: ${e && e.message}`);
        this.finish();
      });
    }
  }

  check(ok, what) {
    this.checks += 1;
    if (!ok) this.failures.push(what);
    return ok;
  }

  // Ends the timed part (before connections are closed).
  stopClock() {
    this.ended = process.hrtime.bigint();
  }

  // Runs one independent part of a workload: its rejection is a failed check and the run goes
  // on with the next part.
  async section(name, body) {
    try {
      await body();
    } catch (e) {
      this.check(false, `${name}: ${e && e.message}`);
    }
  }

  // Runs `body(run)`; a rejection is a failed check. Prints the summary and exits.
  async main(body) {
    try {
      await body(this);
    } catch (e) {
      console.error(e);
      this.check(false, `${e && e.name}: ${e && e.message}`);
    }
    this.finish();
  }

  finish() {
    const ns = (this.ended ?? process.hrtime.bigint()) - this.began;
    const summary = { app: this.app, ...this.results, checks: this.checks };
    if (this.failures.length) summary.failures = this.failures;
    summary.elapsed = Math.round(Number(ns) / 1e6) / 1e3;
    console.log(JSON.stringify(summary));
    process.exit(this.failures.length ? 1 : 0);
  }
}

// Polls `predicate` every 20 ms until it is true or `timeoutMs` passes; its last value.
async function waitFor(predicate, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value || Date.now() >= end) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
}

// `promise`, or a rejection after `ms` milliseconds naming `what`.
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

module.exports = { Run, waitFor, within };

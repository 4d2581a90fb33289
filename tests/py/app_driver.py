"""What every Python application driver of tests/apps.rs shares: checks that are counted and
collected instead of stopping at the first, the one-line JSON summary (with `elapsed` last, which
the Rust test takes off before comparing the direct run with the run through respite), bounded
waits, and worker child processes stopped by their own PID."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback


class Run:
    """One bounded run of an application: results, checks and the time since it began."""

    def __init__(self, app):
        self.app = app
        self.began = time.monotonic()
        self.results = {}
        self.checks = 0
        self.failures = []
        self.ended = None

    def stop_clock(self):
        """Ends the timed part (before workers are shut down)."""
        self.ended = time.monotonic()

    def check(self, ok, what):
        self.checks += 1
        if not ok:
            self.failures.append(what)
        return ok

    def attempt(self, what, body):
        """`body()`, or None when it raised: a failed check (its traceback goes to stderr), and
        the run goes on with what does not depend on it."""
        try:
            return body()
        except Exception as e:
            traceback.print_exc()
            self.check(False, f"{what}: {type(e).__name__}: {e}")
            return None

    def main(self, body):
        """Runs `body(self)`: an exception it raises is a failed check, its traceback goes to
        stderr, and the summary line is printed whatever happened. Never returns."""
        try:
            body(self)
        except Exception as e:
            traceback.print_exc()
            self.check(False, f"{type(e).__name__}: {e}")
        self.finish()

    def finish(self):
        """Prints the summary line and exits 1 when a check failed."""
        elapsed = (self.ended or time.monotonic()) - self.began
        summary = {"app": self.app, **self.results, "checks": self.checks}
        if self.failures:
            summary["failures"] = self.failures
        summary["elapsed"] = round(elapsed, 3)
        print(json.dumps(summary), flush=True)
        sys.exit(1 if self.failures else 0)


def wait_for(predicate, timeout, step=0.05):
    """Polls `predicate` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


class Child:
    """A worker process whose output goes to a log file in a temporary directory of its own; the
    log's last lines go to stderr when the run failed, and the directory is removed at the end."""

    def __init__(self, args, cwd=None, env=None):
        self.dir = tempfile.mkdtemp(prefix="apps-worker-")
        self.log_path = os.path.join(self.dir, "worker.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd, env=env
        )

    def stop(self, show_log, grace=10):
        """SIGTERM (a warm shutdown for rq and celery), then SIGKILL after `grace` seconds."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        if show_log:
            with open(self.log_path, "rb") as f:
                tail = f.read().decode(errors="replace").splitlines()[-60:]
            print(f"--- last lines of the worker's log ({' '.join(self.proc.args[:4])} ...)",
                  file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)

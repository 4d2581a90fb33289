"""Celery with its default options against the Redis (or respite) at PORT, as broker and result
backend: a plain task, a group of 10, a chord of 5 with a callback, a task that succeeds on its
third run after two retries, and a task that fails. One `celery worker --pool threads` child runs
them; it is stopped by its PID at the end. Every result is awaited 30 s at most. Prints one JSON
line; exits 1 when a check fails.

usage: celery_run.py PORT
"""
import os
import sys

port = sys.argv[1]
os.environ["APPS_REDIS_PORT"] = port

from celery import chord, group  # noqa: E402

from app_driver import Child, Run  # noqa: E402
from celery_app import add, fail, flaky, total  # noqa: E402

RESULT_SECONDS = 30


def main(run):
    worker = Child(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "threads",
         "--loglevel", "INFO"],
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    try:
        plain = add.delay(2, 3).get(timeout=RESULT_SECONDS)
        run.check(plain == 5, f"plain task: {plain}")

        grouped = group(add.s(i, i) for i in range(10)).apply_async().get(timeout=RESULT_SECONDS)
        run.check(grouped == [2 * i for i in range(10)], f"group: {grouped}")

        chorded = chord((add.s(i, i) for i in range(5)), total.s()).apply_async()
        chorded = chorded.get(timeout=RESULT_SECONDS)
        run.check(chorded == 20, f"chord: {chorded}")

        retried = flaky.delay("celery:flaky").get(timeout=RESULT_SECONDS)
        run.check(retried == 3, f"retried task: {retried}")

        failing = fail.delay("boom")
        failing.get(timeout=RESULT_SECONDS, propagate=False)
        run.check(failing.state == "FAILURE", f"failing task's state: {failing.state}")
        run.check(
            isinstance(failing.result, ValueError) and str(failing.result) == "boom",
            f"failing task's result: {failing.result!r}",
        )
        run.check("ValueError: boom" in (failing.traceback or ""), "failing task's traceback")
        run.results = {
            "plain": plain,
            "group": sum(grouped),
            "chord": chorded,
            "retries": retried - 1,
            "failure": f"{failing.state} {failing.result!r}",
        }
        run.stop_clock()
    finally:
        worker.stop(show_log=bool(run.failures) or sys.exc_info()[0] is not None)


Run("celery").main(main)

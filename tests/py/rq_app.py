"""RQ with its default options against the Redis (or respite) at PORT: 20 plain jobs, a job
scheduled 1 s ahead with `enqueue_in` and one at a set time with `enqueue_at`, two jobs that depend
on the scheduled one (`depends_on`, so they wait for it although they were enqueued later), a job
that fails into the FailedJobRegistry and leaves its dependent deferred, and a job that succeeds
on its retry. One `rq worker --with-scheduler` child runs them all; it is stopped by its PID once
every job has settled (20 s at most). Prints one JSON line; exits 1 when a check fails.
With `2` after the port, the driver and the worker speak RESP2 (`protocol=2`) instead of
redis-py's default RESP3.

usage: rq_app.py PORT [2]
"""
import os
import sys
from datetime import datetime, timedelta, timezone

from redis import Redis
from rq import Queue, Retry
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

import rq_jobs
from app_driver import Child, Run, wait_for

SETTLE_SECONDS = 20


def main(run):
    port = int(sys.argv[1])
    resp2 = sys.argv[2:] == ["2"]
    redis = Redis(host="127.0.0.1", port=port, **({"protocol": 2} if resp2 else {}))
    url = f"redis://127.0.0.1:{port}" + ("?protocol=2" if resp2 else "")
    queue = Queue("apps", connection=redis)

    adds = [queue.enqueue(rq_jobs.add, i, i) for i in range(20)]
    first = queue.enqueue_in(timedelta(seconds=1), rq_jobs.append, "rq:order", "a")
    at = queue.enqueue_at(datetime.now(timezone.utc) + timedelta(seconds=1), rq_jobs.add, 20, 22)
    bad = queue.enqueue(rq_jobs.fail, "boom")
    flaky = queue.enqueue(rq_jobs.flaky, "rq:flaky", retry=Retry(max=2))
    # The jobs with dependencies, each enqueued on its own: when one cannot be, the run goes
    # on with the others and reports it.
    second = run.attempt(
        "enqueue with depends_on",
        lambda: queue.enqueue(rq_jobs.append, "rq:order", "b", depends_on=first),
    )
    third = second and run.attempt(
        "enqueue with depends_on a list",
        lambda: queue.enqueue(rq_jobs.append, "rq:order", "c", depends_on=[first, second]),
    )
    orphan = run.attempt(
        "enqueue depending on a job that will fail",
        lambda: queue.enqueue(rq_jobs.add, 1, 1, depends_on=bad),
    )

    run.check(first.get_status() == JobStatus.SCHEDULED, f"enqueue_in: {first.get_status()}")
    run.check(first.id in ScheduledJobRegistry(queue=queue), "enqueue_in: in the scheduled registry")
    for job, what in ((second, "depends_on"), (third, "depends_on a list")):
        status = job and job.get_status()
        run.check(status == JobStatus.DEFERRED, f"{what}: {status}")

    here = os.path.dirname(os.path.abspath(__file__))
    rq = os.path.join(os.path.dirname(sys.executable), "rq")
    worker = Child(
        [rq, "worker", "--with-scheduler", "--url", url, "--path", here,
         "apps"]
    )
    settling = [j for j in adds + [first, at, second, third, flaky] if j is not None]
    try:
        settled = wait_for(
            lambda: bad.get_status() == JobStatus.FAILED
            and all(j.get_status() == JobStatus.FINISHED for j in settling),
            SETTLE_SECONDS,
            step=0.1,
        )
        statuses = sorted({str(j.get_status()) for j in settling + [bad]})
        run.check(settled, f"every job settled within {SETTLE_SECONDS} s: {statuses}")

        results = [j.return_value() for j in adds]
        run.check(results == [2 * i for i in range(20)], f"plain jobs: {results}")
        run.check(at.return_value() == 42, f"enqueue_at: {at.return_value()}")
        order = third and third.return_value()
        run.check(order == ["a", "b", "c"], f"dependency order: {order}")
        for job in settling:
            job.refresh()
        run.check(
            second is not None and first.ended_at is not None and second.started_at is not None
            and first.ended_at <= second.started_at,
            "the dependent job started after the scheduled one ended",
        )
        # The scheduled registry keeps whole seconds: the job is due at the second it was
        # scheduled for, truncated.
        due = (first.created_at + timedelta(seconds=1)).replace(microsecond=0)
        run.check(
            first.started_at is not None and due <= first.started_at,
            f"the scheduled job ran at {first.started_at}, before it was due at {due}",
        )
        failed = FailedJobRegistry(queue=queue)
        run.check(failed.get_job_ids() == [bad.id], f"failed registry: {failed.get_job_ids()}")
        last = bad.latest_result()
        run.check(
            last is not None and "ValueError: boom" in (last.exc_string or ""),
            f"failed job's traceback: {last and last.exc_string}",
        )
        status = orphan and orphan.get_status()
        run.check(status == JobStatus.DEFERRED, f"dependent of a failure: {status}")
        run.check(flaky.return_value() == 2, f"retried job: {flaky.return_value()}")
        run.check(redis.get("rq:flaky") == b"2", f"retried job ran {redis.get('rq:flaky')} times")
        run.results = {
            "jobs": len(settling) + 1 + (orphan is not None),
            "finished": sum(j.get_status() == JobStatus.FINISHED for j in settling),
            "failed": len(failed.get_job_ids()),
            "deferred": int(status == JobStatus.DEFERRED),
            "sum": sum(r for r in results if isinstance(r, int)),
            "order": "".join(order or []),
        }
        run.stop_clock()
    finally:
        worker.stop(show_log=bool(run.failures) or sys.exc_info()[0] is not None)


Run("rq").main(main)

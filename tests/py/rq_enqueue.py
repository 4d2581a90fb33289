"""RQ's enqueue, with its default options, against the Redis (or respite) at PORT: one
`Queue(QUEUE).enqueue(rq_jobs.add, 1, 2, job_id=ID)` for each ID given, each on its own (one
that raises does not stop the next). The enqueue's MULTI/EXEC writes the job's hash
(`rq:job:ID`) and pushes ID on the queue's list (`rq:queue:QUEUE`), so behind a sharding proxy it
fails when the two live on different masters. Prints one JSON line with, for each ID,
`enqueued` or what was raised (`refusal.describe`); exits 0 whatever the outcomes (the Rust test
judges them), 1 only when the driver itself breaks.

usage: rq_enqueue.py PORT QUEUE ID...
"""
import sys
import traceback

from redis import Redis
from rq import Queue

import rq_jobs
from app_driver import Run
from refusal import describe


def main(run):
    port, name, ids = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    queue = Queue(name, connection=Redis(host="127.0.0.1", port=port))
    for job_id in ids:
        try:
            job = queue.enqueue(rq_jobs.add, 1, 2, job_id=job_id)
            run.results[job_id] = f"enqueued {job.get_status()}"
        except Exception as e:
            traceback.print_exc()
            run.results[job_id] = describe(e)
    run.stop_clock()


Run("rq enqueue").main(main)

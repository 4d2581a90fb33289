"""Celery's task send, with its default options, against the Redis (or respite) at PORT as
broker and result backend: `add.delay(2, 3)` with no worker running, so the message stays in the
queue. Sending declares the queue first (a MULTI/EXEC of LLEN over the queue's priority lists,
`celery` and `celery\\x06\\x163`, `...6`, `...9`) and binds it (a MULTI/EXEC of SADD on two binding
sets), so behind a sharding proxy it fails when those keys live on different masters. Prints
one JSON line with `sent` or what was raised (`refusal.describe`); exits 0 whatever the outcome
(the Rust test judges it), 1 only when the driver itself breaks.

usage: celery_send.py PORT
"""
import os
import sys
import traceback

os.environ["APPS_REDIS_PORT"] = sys.argv[1]

from app_driver import Run  # noqa: E402
from celery_app import add  # noqa: E402
from refusal import describe  # noqa: E402


def main(run):
    try:
        add.delay(2, 3)
        run.results["send"] = "sent"
    except Exception as e:
        traceback.print_exc()
        run.results["send"] = describe(e)
    run.stop_clock()


Run("celery send").main(main)

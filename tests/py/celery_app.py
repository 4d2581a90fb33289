"""The Celery application of celery_run.py, with Celery's default options: Redis at the port in
APPS_REDIS_PORT as broker and result backend. Its worker imports it by name (`-A celery_app`)."""
import os

from celery import Celery
from redis import Redis

url = f"redis://127.0.0.1:{os.environ['APPS_REDIS_PORT']}/0"
app = Celery("apps", broker=url, backend=url)


@app.task
def add(a, b):
    return a + b


@app.task
def total(parts):
    return sum(parts)


@app.task
def fail(message):
    raise ValueError(message)


@app.task(bind=True, max_retries=3)
def flaky(self, key):
    """Fails twice, retrying 0.1 s later each time, then returns how many runs it took."""
    runs = Redis.from_url(url).incr(key)
    if runs < 3:
        raise self.retry(exc=RuntimeError(f"run {runs} fails"), countdown=0.1)
    return runs

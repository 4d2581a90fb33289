"""The job functions of rq_app.py. They live in a module of their own because the RQ worker
imports them by dotted name (`rq_jobs.add`), which a function of the driver's `__main__` has not."""
from rq import get_current_job


def add(a, b):
    return a + b


def append(key, part):
    """Appends `part` to the list `key` and returns the whole list, so the order in which
    dependent jobs ran can be read back."""
    conn = get_current_job().connection
    conn.rpush(key, part)
    return [p.decode() for p in conn.lrange(key, 0, -1)]


def fail(message):
    raise ValueError(message)


def flaky(key):
    """Fails on its first run and succeeds on the next: the counter `key` says which run it is."""
    runs = get_current_job().connection.incr(key)
    if runs < 2:
        raise RuntimeError(f"run {runs} fails")
    return runs

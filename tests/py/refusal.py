"""What an application raised for a Redis error reply, as tests/apps_sharded.rs checks it: the
reply's error code and text as redis-py received them, found in the exception's chain of causes
(an application may wrap redis-py's error in its own), then the exception the application raised.
redis-py takes the code off the text and turns it into the exception's class (`-CROSSSLOT ...`
becomes `ClusterCrossSlotError`), so the code is read back from redis-py's own table."""
from redis._parsers.base import BaseParser
from redis.exceptions import ResponseError


def error_code(e):
    """The error code of the reply redis-py raised `e` for (`ERR` when its class has no code of
    its own)."""
    for code, cls in BaseParser.EXCEPTION_CLASSES.items():
        if isinstance(cls, type) and type(e) is cls:
            return code
    return "ERR"


def describe(raised):
    """`CODE text (raised module.Class)` for an exception an application raised, with `from
    module.Class` naming redis-py's own error when the application wrapped it."""
    e, hops = raised, 0
    while e is not None and not isinstance(e, ResponseError) and hops < 10:
        e, hops = e.__cause__ or e.__context__, hops + 1
    if not isinstance(e, ResponseError):
        return f"no error reply (raised {qualified(raised)}: {raised})"
    wrapped = "" if e is raised else f" from {qualified(e)}"
    return f"{error_code(e)} {e} (raised {qualified(raised)}{wrapped})"


def qualified(e):
    return f"{type(e).__module__}.{type(e).__name__}"

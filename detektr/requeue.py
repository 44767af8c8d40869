"""A task that loses the server part-way is given back to its queue, never acknowledged.

With late acks, a task that raises is acknowledged: its frames would be lost when the error came
from the server going away while the worker fetched bytes, published, dead-lettered or sent a
retry. `requeue_on_server_loss` turns such an error into Celery's `Reject(requeue=True)`, so the
message goes back to its queue (or, when the server is still away, stays held and beat gives it
back). Running the task again is safe: results are published once per frame and processor.

Only errors that say the server is unreachable or cannot take writes for now count: a reply that
says a command is wrong (a key of the wrong type, say) would fail again at once, so such a task
fails and is acknowledged as before instead of going round forever. Errors inside a processor
never get here: they are caught per frame and retried (`detektr.execution`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

SERVER_LOST: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # also BusyLoadingError: the server is loading its data after a restart
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica that is not (yet) the primary
    redis.exceptions.OutOfMemoryError,  # writes refused until memory is freed
    OperationalError,  # kombu could not send (a retry, a gate's follow-up task)
)
"""Errors after which the task is requeued instead of acknowledged."""


def requeue_on_server_loss(body: F) -> F:
    """Wrap a task body: an error of `SERVER_LOST` raised from it becomes `Reject(exc, requeue=True)`."""

    @functools.wraps(body)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except SERVER_LOST as exc:
            log.warning("lost the server in %s (%s: %s); the task goes back to its queue",
                        body.__name__, type(exc).__name__, exc)
            raise Reject(exc, requeue=True) from exc

    return wrapped  # type: ignore[return-value]

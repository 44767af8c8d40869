"""The Celery binding of processors: each declared `ProcessorSpec` becomes one Celery task.

A worker binds every processor it imported when it starts (`detektr.worker_hooks`); a
processor's `.task` (and so `.delay()`) binds it on first use. The task bodies are in
`detektr.execution`; this module only says how Celery runs them.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from .execution import run_batch, run_task
from .processor import ProcessorSpec, declared_processors


def bind(app: Any, spec: ProcessorSpec) -> Any:
    """Register `spec`'s task with `app` (once) and return it."""
    if spec.task_name in app.tasks:
        return app.tasks[spec.task_name]
    options: dict[str, Any] = dict(
        name=spec.task_name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        serializer="json",
        max_retries=None,  # detektr counts attempts itself, see detektr.execution
    )
    if spec.batched:
        from celery.exceptions import Reject

        def task_body(task: Any, requests: list[Any]) -> Any:
            try:
                return run_batch(task, spec, [(request.args[0] if request.args else None, _queue_of(request))
                                              for request in requests])
            except Reject:  # the server was lost part-way: every message of the batch goes back to its queue
                return REQUEUE_BATCH

        options.update(base=requeueing_batches(), flush_every=spec.batch_size,
                       flush_interval=spec.batch_wait_ms / 1000)
    else:

        def task_body(task: Any, payload: Any) -> None:  # type: ignore[misc]
            run_task(task, spec, payload, _queue_of(task.request))

    task_body.__name__ = "process_" + spec.name.replace("-", "_")
    task_body.__doc__ = spec.description
    return app.task(**options)(task_body)


REQUEUE_BATCH = "requeue-batch"
"""What a batched task returns when its messages must go back to their queues instead of being acknowledged."""


@cache
def requeueing_batches() -> type:
    """celery-batches' task class, but a batch that returns `REQUEUE_BATCH` has its messages requeued,
    and each message sends Celery's task events, so that Flower shows batched tasks like the others.

    celery-batches acknowledges a batch's messages whatever its task raised (it runs the task
    itself, not through Celery's tracer), so Celery's `Reject` cannot reach them: the batch says
    so in its return value instead, which comes back to the worker's main process, where the
    messages are. It sends no task events either: here each message sends `task-received` when
    the worker takes it, `task-started` when its batch starts and, with the batch's return value
    (one `detektr.execution.BatchOutcome` per message), `task-succeeded`, `task-retried` or
    `task-failed`. The same as `Batches.flush` (celery-batches 0.11) otherwise.
    """
    from celery.signals import task_received
    from celery_batches import Batches, SimpleRequest, partition
    from celery_batches.trace import apply_batches_task

    class RequeueingBatches(Batches):  # type: ignore[misc]
        def flush(self, requests: Any) -> Any:
            acks_early, acks_late = partition(lambda r: bool(r.task.acks_late), requests)
            serializable_requests = ([SimpleRequest.from_request(r) for r in requests],)
            started = [time.monotonic()]

            def on_accepted(pid: int, time_accepted: float) -> None:
                started[0] = time_accepted
                for req in requests:
                    req.send_event("task-started")
                for req in acks_early:
                    req.acknowledge()

            def on_return(result: Any) -> None:
                if result == REQUEUE_BATCH:
                    for req in acks_late:
                        req.reject(requeue=True)  # sends task-rejected
                    return
                _announce_outcomes(requests, result, time.monotonic() - started[0])
                for req in acks_late:
                    req.acknowledge()

            return self._pool.apply_async(apply_batches_task, (self, serializable_requests, 0, None),
                                          accept_callback=on_accepted, callback=on_return)

    def announce_received(sender: Any = None, request: Any = None, **_: Any) -> None:
        if isinstance(getattr(request, "task", None), RequeueingBatches):  # Celery announces the others itself
            request.send_event("task-received", name=request.name, args=request.argsrepr,
                               kwargs=request.kwargsrepr, retries=request.request_dict.get("retries", 0),
                               eta=request.eta and request.eta.isoformat())

    task_received.connect(announce_received, weak=False)
    return RequeueingBatches


def _announce_outcomes(requests: list[Any], outcomes: Any, runtime_s: float) -> None:
    """Send each request's ending as a task event; a batch that raised (no outcomes) failed as a whole."""
    if not isinstance(outcomes, list) or len(outcomes) != len(requests):
        outcomes = [("FAILURE", "the batch task raised (see the worker's log)")] * len(requests)
    for req, (state, error) in zip(requests, outcomes):
        if state == "RETRY":
            req.send_event("task-retried", exception=error, traceback="")
        elif state == "FAILURE":
            req.send_event("task-failed", exception=error, traceback="")
        else:
            req.send_event("task-succeeded", result="None", runtime=runtime_s)


def _queue_of(request: Any) -> str | None:
    """The queue a task was delivered from (where a retry goes back to), when Celery says."""
    info = getattr(request, "delivery_info", None) or {}
    return info.get("routing_key") or None


def bind_declared(app: Any) -> list[str]:
    """Bind every processor declared in this process; return their task names."""
    return [bind(app, spec).name for spec in declared_processors().values()]


def bound_task(spec: ProcessorSpec) -> Any:
    """`spec`'s task on detektr's app (the app is built on first use)."""
    from .celery_app import app

    return bind(app, spec)

"""The Celery binding of processors: each declared `ProcessorSpec` becomes one Celery task.

A worker binds every processor it imported when it starts (`detektr.worker_hooks`); a
processor's `.task` (and so `.delay()`) binds it on first use. The task bodies are in
`detektr.execution`; this module only says how Celery runs them.
"""

from __future__ import annotations

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

        def task_body(task: Any, requests: list[Any]) -> str | None:
            try:
                run_batch(task, spec, [(request.args[0] if request.args else None, _queue_of(request))
                                       for request in requests])
            except Reject:  # the server was lost part-way: every message of the batch goes back to its queue
                return REQUEUE_BATCH
            return None

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
    """celery-batches' task class, but a batch that returns `REQUEUE_BATCH` has its messages requeued.

    celery-batches acknowledges a batch's messages whatever its task raised (it runs the task
    itself, not through Celery's tracer), so Celery's `Reject` cannot reach them: the batch says
    so in its return value instead, which comes back to the worker's main process, where the
    messages are. The same as `Batches.flush` (celery-batches 0.11) otherwise.
    """
    from celery_batches import Batches, SimpleRequest, partition
    from celery_batches.trace import apply_batches_task

    class RequeueingBatches(Batches):  # type: ignore[misc]
        def flush(self, requests: Any) -> Any:
            acks_early, acks_late = partition(lambda r: bool(r.task.acks_late), requests)
            serializable_requests = ([SimpleRequest.from_request(r) for r in requests],)

            def on_accepted(pid: int, time_accepted: float) -> None:
                for req in acks_early:
                    req.acknowledge()

            def on_return(result: Any) -> None:
                for req in acks_late:
                    if result == REQUEUE_BATCH:
                        req.reject(requeue=True)
                    else:
                        req.acknowledge()

            return self._pool.apply_async(apply_batches_task, (self, serializable_requests, 0, None),
                                          accept_callback=on_accepted, callback=on_return)

    return RequeueingBatches


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

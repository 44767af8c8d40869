"""Sending frames to a processor: the one function that sends a task.

Ingest sends the frames it routed, a worker sends a failed frame back for another attempt and
sends frames on to the processors waiting on a gate; all three go through `send_frames`, so a
task's name, queue, priority and counters are decided the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import frame_spans, keys, stats
from .router import celery_priority


def send_frames(
    app: Any,
    counters: Any,
    processor: str,
    queue: str,
    payloads: Sequence[dict[str, Any]],
    priority: int,
    *,
    producer: Any = None,
    countdown: float | None = None,
) -> None:
    """Send one task carrying `payloads` (frame references) to `processor` on `queue`.

    `priority` is the frames' (0-9, 9 most urgent); `countdown` delays the task (a retry's
    backoff). Counted on `counters` (a pipeline): the task and its frames (`tasks`, `queued`), or
    the frames sent back for another attempt (`retries`).
    """
    with frame_spans.sending(processor, queue, payloads):  # a one-frame task is sent in its frame's trace
        app.send_task(keys.task_name(processor), args=[list(payloads)], queue=queue,
                      priority=celery_priority(priority), producer=producer, countdown=countdown,
                      argsrepr=frames_repr(payloads), kwargsrepr="{}")
    first = sum(1 for payload in payloads if not payload.get("attempt"))
    if first:
        stats.count_processor(counters, processor, "tasks")
        stats.count_processor(counters, processor, "queued", first)
    if first < len(payloads):
        stats.count_processor(counters, processor, "retries", len(payloads) - first)


def frames_repr(payloads: Sequence[dict[str, Any]]) -> str:
    """What Flower and task events show as a task's arguments: its frames' ids, not every field.

    Celery would otherwise make a `saferepr` of the whole payload for every task it sends (a tenth of
    ingest's time per frame under a backlog) and carry it in the message.
    """
    ids = [str(payload.get("frame_id")) for payload in payloads]
    if len(ids) <= 2:
        return f"[{', '.join(ids)}]"
    return f"[{ids[0]}, ... {ids[-1]}: {len(ids)} frames]"

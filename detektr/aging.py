"""Aging: a frame of low priority waits a bounded time, however many urgent frames keep coming.

Workers take tasks from a queue's most urgent priority list first, so a steady stream of urgent
frames could keep the least urgent ones waiting for ever. The processors check (Celery beat)
looks at the oldest task of each less urgent list of every queue and moves a task that has
waited longer than `DETEKTR_BACKPRESSURE__AGING_S` to the end of the most urgent list, where a
worker takes it next. A task's age is its frames' time in detektr (`ingested_at`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from . import keys

MOVES_PER_CHECK = 256
"""At most this many tasks are moved per queue and check (the rest wait for the next one)."""


def task_frames(message: bytes | str) -> list[dict[str, Any]]:
    """The frame references a queued task carries (from kombu's JSON envelope around Celery's body)."""
    try:
        envelope = json.loads(message)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        frames = args[0] if args and isinstance(args[0], list) else args
    except (ValueError, KeyError, TypeError, IndexError):
        return []
    return [frame for frame in frames if isinstance(frame, dict)]


def task_ingested_at(message: bytes | str) -> float | None:
    """When the oldest frame of a queued task was ingested (None when it says not)."""
    try:
        times = [float(frame["ingested_at"]) for frame in task_frames(message) if "ingested_at" in frame]
    except (TypeError, ValueError):
        return None
    return min(times) if times else None


def overdue(ingested_at: float | None, now: float, aging_s: float) -> bool:
    """Whether a task has waited longer than `aging_s` (a task whose age is unknown never is)."""
    return ingested_at is not None and aging_s > 0 and now - ingested_at > aging_s


def promote_overdue(redis: Any, queue: str, aging_s: float, now: float) -> int:
    """Move the overdue oldest tasks of `queue`'s less urgent lists to the end of its most urgent list."""
    lists = keys.celery_queue_lists(queue)
    moved = 0
    for source in lists[1:]:
        while moved < MOVES_PER_CHECK:
            oldest = redis.lindex(source, -1)
            if oldest is None or not overdue(task_ingested_at(oldest), now, aging_s):
                break
            if redis.lmove(source, lists[0], "RIGHT", "RIGHT") is None:
                break
            moved += 1
    return moved

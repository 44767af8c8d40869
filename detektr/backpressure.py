"""Backpressure: how full each processor's queue is, and what ingest does about it (plain code, no I/O).

The processors check (Celery beat, every `DETEKTR_BEAT__PROCESSORS_INTERVAL_S`) measures each
processor's queue depth against its limit (`DETEKTR_BACKPRESSURE__LIMIT_PER_WORKER` tasks per
worker process) and keeps a level in Redis: normal, low (60%), high (80%), critical (95%). Ingest
reads the levels with its routing table and acts on each processor's policy:

- `shed` (the default, for live video: the latest frame wins): while its queue is backed up,
  ingest holds a processor's frames (`detektr.holding`); at high a camera's newer frame replaces
  its held frames of priority 0, at critical all its held frames. Every frame replaced is counted
  as skipped, so the processor gets each camera's newest frame and its urgent ones.
- `pause` (for work that must see every frame): at high ingest reads less at once, at critical
  it stops reading, so frames wait in the input stream.
"""

from __future__ import annotations

from collections.abc import Mapping

NORMAL, LOW, HIGH, CRITICAL = "normal", "low", "high", "critical"
LEVELS = (NORMAL, LOW, HIGH, CRITICAL)
THRESHOLDS = ((CRITICAL, 0.95), (HIGH, 0.8), (LOW, 0.6))
"""A level is reached when the depth is at least this share of the limit."""
POLICIES = ("shed", "pause")


def queue_limit(capacity: int, per_worker: int) -> int:
    """How many tasks a processor's queue may hold: `per_worker` per worker process."""
    return max(1, capacity) * per_worker


def level(depth: int, limit: int) -> str:
    """The backpressure level of a queue `depth` tasks deep, against its `limit`."""
    fill = depth / max(1, limit)
    return next((name for name, share in THRESHOLDS if fill >= share), NORMAL)


def at_least(current: str, threshold: str) -> bool:
    """Whether `current` is `threshold` or worse."""
    return LEVELS.index(current) >= LEVELS.index(threshold)


def replaces(held_priority: int, current: str) -> bool:
    """Whether a camera's newer frame replaces one of its frames still held for a shedding processor at `current`.

    At high the newest frame wins over held frames of priority 0 (the least urgent go first); at
    critical over every held frame of the camera. Below high nothing is replaced.
    """
    return current == CRITICAL or (current == HIGH and held_priority == 0)


def read_count(batch_size: int, levels: Mapping[str, str], policies: Mapping[str, str]) -> int:
    """How many entries ingest reads next: all of `batch_size`, fewer (high) or none (critical) for `pause`."""
    paused = [levels.get(name, NORMAL) for name, policy in policies.items() if policy == "pause"]
    if any(current == CRITICAL for current in paused):
        return 0
    if any(current == HIGH for current in paused):
        return max(1, batch_size // 4)
    return batch_size

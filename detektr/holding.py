"""The frames ingest holds for a queue, to send them in fuller tasks while the queue is backed up.

`FrameHolder` keeps frame references per (processor, queue, priority) with the input-stream
entries they came from; `release` sends those that should wait no longer (`router.keep_holding`)
through `dispatch.send_frames`, in full tasks from a full hold and in finer ones otherwise
(`router.task_sizes`), and returns the entries whose frames have all left, for ingest to
acknowledge. An entry with frames still held is not acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .backpressure import replaces
from .dispatch import send_frames
from .router import hold_is_full, keep_holding, task_sizes


@dataclass
class _Held:
    """Frame references held for one (processor, queue, priority), with the entries they came from."""

    since: float
    payloads: list[dict[str, Any]] = field(default_factory=list)
    entry_ids: list[str] = field(default_factory=list)


class FrameHolder:
    """Frame references waiting to leave as tasks, and the entries they hold unacknowledged."""

    def __init__(self, frames_per_task: int, max_hold_ms: int) -> None:
        self.frames_per_task = frames_per_task
        self.max_hold_s = max_hold_ms / 1000
        self._held: dict[tuple[str, str, int], _Held] = {}
        self._unsent: dict[str, int] = {}
        """Entry id -> how many of its frame references are still held (it is acknowledged at 0)."""

    def __bool__(self) -> bool:
        return bool(self._held)

    @property
    def queues(self) -> set[str]:
        """The queues that frames are held for."""
        return {queue for _, queue, _ in self._held}

    def holds(self, entry_id: str) -> bool:
        """Whether some frame reference of this entry has not left yet."""
        return entry_id in self._unsent

    def hold(self, processor: str, queue: str, priority: int, payload: dict[str, Any], entry_id: str,
             level: str = "normal") -> tuple[list[dict[str, Any]], list[str]]:
        """Add one frame reference for `processor` on `queue`; under backpressure `level`, it replaces older ones.

        The frame replaces its camera's held frames that `backpressure.replaces` says it wins over.
        Returns those frames (to count as skipped) and the entries whose frames have now all left.
        """
        replaced: list[dict[str, Any]] = []
        finished: list[str] = []
        if level in ("high", "critical"):
            for (name, held_queue, held_priority), held in self._held.items():
                if name != processor or held_queue != queue or not replaces(held_priority, level):
                    continue
                for index in reversed(range(len(held.payloads))):
                    if held.payloads[index]["camera_id"] == payload["camera_id"]:
                        replaced.append(held.payloads.pop(index))
                        finished += self._left(held.entry_ids.pop(index))
        held = self._held.setdefault((processor, queue, priority), _Held(time.monotonic()))
        held.payloads.append(payload)
        held.entry_ids.append(entry_id)
        self._unsent[entry_id] = self._unsent.get(entry_id, 0) + 1
        return replaced, finished

    def _left(self, entry_id: str) -> list[str]:
        """One frame reference of `entry_id` has left; the entry when it was its last."""
        self._unsent[entry_id] -= 1
        if self._unsent[entry_id]:
            return []
        del self._unsent[entry_id]
        return [entry_id]

    def release(self, app: Any, counters: Any, depths: Mapping[str, int], capacity: Callable[[str, str], int],
                force: bool = False) -> list[str]:
        """Send what should wait no longer (everything with `force`); return the entries now fully sent.

        `depths` are the queues' depths now, `capacity(processor, queue)` their worker processes;
        the tasks are counted on `counters` (a pipeline).
        """
        now = time.monotonic()
        released: list[str] = []
        with app.producer_or_acquire() as producer:
            for key, held in list(self._held.items()):
                name, queue, priority = key
                workers = capacity(name, queue)
                if not force and keep_holding(depths.get(queue, 0), workers, len(held.payloads),
                                              self.frames_per_task, now - held.since, self.max_hold_s):
                    continue
                finer = not hold_is_full(len(held.payloads), workers, self.frames_per_task)
                start = 0
                for size in task_sizes(len(held.payloads), workers, self.frames_per_task, finer):  # none: all replaced
                    send_frames(app, counters, name, queue, held.payloads[start : start + size], priority,
                                producer=producer)
                    start += size
                del self._held[key]
                for entry_id in held.entry_ids:
                    released += self._left(entry_id)
        return released

"""How held frames leave: full tasks from a full hold, finer ones from a hold that did not fill."""

from __future__ import annotations

import contextlib

import pytest

from detektr.holding import FrameHolder


class _App:
    """Records the size of each task sent (a stand-in for Celery in this unit test)."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    @contextlib.contextmanager
    def producer_or_acquire(self):
        yield None

    def send_task(self, name, args, **options):
        self.sent.append(len(args[0]))


class _Counters:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.mark.parametrize(
    ("held", "max_hold_ms", "expected"),
    [
        (128, 100, [64, 64]),  # a full hold: full tasks
        (100, 0, [17, 17, 17, 17, 16, 16]),  # not holding: what one read brought, split finer
        (3, 0, [2, 1]),  # a live camera's few frames: one task per process, as ever
    ],
)
def test_a_full_hold_leaves_in_full_tasks_and_anything_less_in_finer_ones(held, max_hold_ms, expected):
    holder = FrameHolder(frames_per_task=64, max_hold_ms=max_hold_ms)
    for number in range(held):
        holder.hold("p", "p", 0, {"camera_id": "a", "frame_id": f"f{number}"}, f"e{number}")
    app = _App()
    released = holder.release(app, _Counters(), {"p": 5}, lambda name, queue: 2)
    assert app.sent == expected
    assert sorted(released) == sorted(f"e{number}" for number in range(held)) and not holder

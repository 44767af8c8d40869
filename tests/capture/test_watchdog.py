"""The watchdog: a hung source is abandoned and reopened; failing opens back off exponentially, capped."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import detektr.capture.camera as capture_module
from detektr.capture import CaptureSupervisor, SourceError, backoff_s, capture_status

from .conftest import config, running, wait_for


class FakeSources:
    """Stands in for `open_source`: each open takes the next behaviour from a script and records when."""

    def __init__(self, *behaviours: str) -> None:
        self.behaviours = list(behaviours)
        self.opened_at: list[float] = []
        self.release = threading.Event()  # lets hung reads return at the end of the test

    def __call__(self, camera, timeout_s):
        behaviour = self.behaviours.pop(0) if len(self.behaviours) > 1 else self.behaviours[0]
        return _FakeSource(self, behaviour)


class _FakeSource:
    def __init__(self, owner: FakeSources, behaviour: str) -> None:
        self.owner, self.behaviour, self.frames = owner, behaviour, 0

    def open(self) -> None:
        self.owner.opened_at.append(time.monotonic())
        if self.behaviour == "refuse":
            raise SourceError("cannot open fake://camera: refused")

    def read(self):
        self.frames += 1
        if self.behaviour == "hang" and self.frames > 3:
            self.owner.release.wait(60)  # a read that never returns on its own (a wedged driver or socket)
            raise SourceError("released")
        time.sleep(0.02)
        return np.full((48, 64, 3), self.frames % 256, np.uint8)

    def rewind(self) -> bool:
        return False

    def close(self) -> None:
        pass


@pytest.fixture()
def fake_sources(monkeypatch: pytest.MonkeyPatch):
    """Install a FakeSources script as the capture's source factory."""
    def install(*behaviours: str) -> FakeSources:
        fakes = FakeSources(*behaviours)
        monkeypatch.setattr(capture_module, "open_source", fakes)
        return fakes
    return install


def test_a_hung_read_is_abandoned_and_the_source_reopened(capture_redis, settings, fake_sources):
    fakes = fake_sources("hang", "work")
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "wedged", "source": "rtsp://fake/camera"}, no_frame_timeout_s=0.5))
    capture = supervisor.captures["wedged"]
    try:
        with running(supervisor):
            wait_for(lambda: capture.state.reconnects >= 1 and capture.state.frames_captured >= 10,
                     message="a reconnection and frames from the second source")
            assert "delivered no frame for 0.5 s" in capture.state.last_error
            assert len(fakes.opened_at) == 2
            assert capture.state.connected
    finally:
        fakes.release.set()


def test_failing_opens_back_off_exponentially_up_to_the_cap(capture_redis, settings, fake_sources):
    fakes = fake_sources("refuse")
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "down", "source": "rtsp://fake/camera"}, backoff_initial_s=0.1, backoff_max_s=0.4))
    with running(supervisor):
        wait_for(lambda: len(fakes.opened_at) >= 6, message="six attempts")
        state = capture_status(capture_redis)["down"]
    waits = [b - a for a, b in zip(fakes.opened_at, fakes.opened_at[1:], strict=False)][:5]
    expected = [backoff_s(attempt, 0.1, 0.4) for attempt in range(5)]  # 0.1, 0.2, 0.4, 0.4, 0.4
    for waited, planned in zip(waits, expected, strict=True):
        assert planned * 0.95 <= waited <= planned + 0.3, (waits, expected)
    assert state["state"] in ("reconnecting", "connecting") and state["last_error"].endswith("refused")
    assert state["reconnects"] >= 5 and not state["connected"]


def test_backoff_starts_again_after_a_good_connection(capture_redis, settings, fake_sources):
    fakes = fake_sources("refuse", "refuse", "refuse", "hang", "refuse", "work")
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "flaky", "source": "rtsp://fake/camera"}, no_frame_timeout_s=0.5, backoff_initial_s=0.2,
        backoff_max_s=5))
    try:
        with running(supervisor):
            wait_for(lambda: len(fakes.opened_at) >= 6, message="six attempts")
    finally:
        fakes.release.set()
    waits = [b - a for a, b in zip(fakes.opened_at, fakes.opened_at[1:], strict=False)]
    assert waits[2] >= 0.8 * 0.95  # third failure in a row: 0.8 s
    # the hung connection delivered frames for a moment, hung for 0.5 s, and then the wait was the initial
    # 0.2 s again (not 1.6 s), then 0.4 s after the next failure
    assert 0.7 * 0.95 <= waits[3] < 0.7 + 0.4
    assert 0.4 * 0.95 <= waits[4] < 0.4 + 0.3

"""The reading thread: one source read into a latest-frame slot, abandoned rather than joined when it stalls."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..cameras import CameraConfig
from .sources import RateLimiter, SourceError, VideoSource, scrub


@dataclass(frozen=True)
class Captured:
    """One frame read from a source: the image, when it was read, its number since the source opened."""

    image: np.ndarray = field(repr=False)
    timestamp: float
    index: int


class FrameSlot:
    """Hands frames from a reader to the publisher: live, a new frame replaces an untaken one; else put waits."""

    def __init__(self, drop_oldest: bool) -> None:
        self.drop_oldest = drop_oldest
        self._cond = threading.Condition()
        self._item: Captured | None = None

    def put(self, item: Captured, abandoned: threading.Event) -> bool:
        """Offer a frame; return True when it replaced one that was never taken (a skipped frame)."""
        with self._cond:
            while not self.drop_oldest and self._item is not None and not abandoned.is_set():
                self._cond.wait(0.1)
            if abandoned.is_set():
                return False
            replaced = self._item is not None
            self._item = item
            self._cond.notify_all()
            return replaced

    def take(self, timeout_s: float) -> Captured | None:
        """The waiting frame, waiting up to `timeout_s` for one; None if none came."""
        with self._cond:
            if self._item is None and timeout_s > 0:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            if item is not None:
                self._cond.notify_all()
            return item


class FrameReader:
    """Reads one source in its own thread into a FrameSlot; abandoned, never joined, when it stalls."""

    def __init__(self, camera: CameraConfig, source: VideoSource) -> None:
        self.camera = camera
        self.source = source
        self.slot = FrameSlot(drop_oldest=camera.is_live)
        self.limiter = RateLimiter(camera.fps if camera.kind != "synthetic" else None)
        self.abandoned = threading.Event()
        self.connected = threading.Event()
        self.done = threading.Event()
        self.error: str | None = None
        self.ended = False
        self.frames_read = 0
        self.frames_replaced = 0
        self.busy_since: float | None = time.monotonic()  # opening counts as waiting for the source
        self._thread = threading.Thread(target=self._run, name=f"capture-read-{camera.id}", daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def abandon(self) -> None:
        """Ask the thread to stop; it does once its current open or read returns."""
        self.abandoned.set()

    def stalled_s(self, now: float) -> float:
        """How long the current open or read has been waiting on the source (0 when not inside one)."""
        since = self.busy_since
        return 0.0 if since is None else max(0.0, now - since)

    def _run(self) -> None:
        try:
            self.source.open()
            self.connected.set()
            self._read_frames()
        except SourceError as exc:
            self.error = str(exc)
        except Exception as exc:  # OpenCV or a renderer failing: reported, then reconnected
            self.error = scrub(f"{type(exc).__name__}: {exc}", self.camera.source)
        finally:
            self.busy_since = None
            try:
                self.source.close()
            finally:
                self.done.set()

    def _read_frames(self) -> None:
        pace = not self.camera.is_live  # a capped file waits for its turn instead of dropping frames
        while not self.abandoned.is_set():
            self.busy_since = time.monotonic()
            image = self.source.read()
            self.busy_since = None
            if image is None:
                if self.camera.loop and self.source.rewind():
                    continue
                self.ended = True
                return
            index, self.frames_read = self.frames_read, self.frames_read + 1
            if pace:
                delay = self.limiter.delay_s(time.monotonic())
                if delay and self.abandoned.wait(delay):
                    return
            if not self.limiter.admit(time.monotonic()):
                continue
            captured = Captured(image, time.time(), index)  # a paced file's frame is taken when it is due
            if self.slot.put(captured, self.abandoned):
                self.frames_replaced += 1

"""One camera: its capture loop, which is also its reader's watchdog, and the backoff and sizes it uses."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from typing import Any

import redis as redis_lib

from .. import keys
from ..cameras import CameraConfig, WatchdogConfig
from ..config import Settings
from ..producer import FrameProducer
from ..redaction import redact_url
from .appender import StreamAppender
from .reader import Captured, FrameReader
from .sources import SourceError, open_source, scrub
from .state import CameraState

log = logging.getLogger(__package__)  # detektr.capture, the name its log lines have always had

FPS_WINDOW_S = 2.0
"""The `fps` in a camera's state counts the frames sent over this many seconds."""

_FINISHED, _STOPPED = "finished", "stopped"


def new_traceparent() -> str:
    """A fresh W3C traceparent: version 00, random trace and span ids, sampled."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """The wait before reconnection attempt `attempt` (0-based): `initial_s`, doubling, capped at `max_s`."""
    return min(max_s, initial_s * 2 ** min(max(attempt, 0), 60))


def output_size(source_width: int, source_height: int, width: int | None, height: int | None) -> tuple[int, int]:
    """The size frames are sent at: both given, exactly that; one given, the other keeps the aspect ratio."""
    if width and height:
        return width, height
    if width:
        return width, max(1, round(source_height * width / source_width))
    if height:
        return max(1, round(source_width * height / source_height)), height
    return source_width, source_height


class CameraCapture:
    """One camera's capture loop: publishes what its reader delivers, and is the reader's watchdog."""

    def __init__(
        self,
        redis: Any,
        settings: Settings,
        camera: CameraConfig,
        watchdog: WatchdogConfig,
        *,
        fail_fast: bool = False,
        max_frames: int | None = None,
    ) -> None:
        self.redis = redis
        self.camera = camera
        self.watchdog = watchdog
        self.fail_fast = fail_fast
        self.max_frames = max_frames
        self.producer = FrameProducer(redis, settings.input_stream, maxlen=settings.input_maxlen,
                                      frame_ttl_s=settings.frames.ttl_s, by_reference=True)
        self.appender = StreamAppender(redis, self.producer, settings.ingest.group, camera.queue_limit,
                                       camera.is_live)
        self.state = CameraState(camera.id, redact_url(camera.source), camera.kind, camera.is_live)
        self.failure: str | None = None
        self._skipped_before = 0  # frames replaced in the slots of earlier readers, plus stream drops
        self._read_before = 0  # frames read by earlier readers
        self._reader: FrameReader | None = None
        self._sent_at: deque[float] = deque()  # monotonic times of the frames sent in the last FPS_WINDOW_S
        self._state_written_at = 0.0
        self._redis_down = False

    # state

    def _skipped(self) -> int:
        return self._skipped_before + (self._reader.frames_replaced if self._reader else 0)

    def write_state(self, force: bool = False) -> None:
        """Write the camera's state to Redis (at most every `state_interval_s` unless forced)."""
        now = time.monotonic()
        if not force and now - self._state_written_at < self.watchdog.state_interval_s:
            return
        self.state.fps = self._fps(now) if self.state.connected else 0.0
        self.state.frames_skipped = self._skipped()
        self._state_written_at = now
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(keys.capture_state(self.camera.id), mapping=self.state.fields())
            pipe.sadd(keys.CAPTURE_CAMERAS, self.camera.id)
            pipe.execute()
        except redis_lib.RedisError as exc:
            log.debug("%s: state not written: %s", self.camera.id, exc)

    def _fps(self, now: float) -> float:
        while self._sent_at and self._sent_at[0] < now - FPS_WINDOW_S:
            self._sent_at.popleft()
        if len(self._sent_at) < 2:
            return 0.0
        return (len(self._sent_at) - 1) / max(self._sent_at[-1] - self._sent_at[0], 1e-6)

    def _error(self, message: str) -> None:
        self.state.last_error, self.state.last_error_at = message, time.time()

    # loop

    def run(self, stop: threading.Event) -> None:
        """Capture until `stop` is set, a file ends, `max_frames` are sent, or (fail_fast) a first open fails."""
        attempt = 0
        try:
            while not stop.is_set():
                self.state.state, self.state.connected = "connecting", False
                self.write_state(force=True)
                source = open_source(self.camera, self.watchdog.no_frame_timeout_s)
                reader = self._reader = FrameReader(self.camera, source)
                frames_before = self.state.frames_captured
                reader.start()
                try:
                    outcome = self._pump(reader, stop)
                except Exception as exc:  # a bug or OpenCV failing on a frame: reported, then reconnected
                    outcome = scrub(f"{type(exc).__name__}: {exc}", self.camera.source)
                finally:
                    reader.abandon()
                    self._skipped_before += reader.frames_replaced
                    self._read_before += reader.frames_read
                    self.state.frames_read = self._read_before
                    self._reader = None
                if outcome in (_FINISHED, _STOPPED):
                    self.state.state = outcome
                    return
                self._error(outcome)
                self.state.connected = False
                if self.fail_fast and self.state.frames_captured == 0 and self.state.reconnects == 0:
                    self.failure, self.state.state = outcome, "failed"  # the caller reports it
                    return
                if self.state.frames_captured > frames_before:
                    attempt = 0
                delay = backoff_s(attempt, self.watchdog.backoff_initial_s, self.watchdog.backoff_max_s)
                attempt += 1
                self.state.reconnects += 1
                self.state.state = "reconnecting"
                log.warning("%s: %s; reconnecting in %.1f s", self.camera.id, outcome, delay)
                self.write_state(force=True)
                self._wait(stop, delay)
            self.state.state = _STOPPED
        finally:
            self.state.connected = False
            self.write_state(force=True)

    def _wait(self, stop: threading.Event, delay_s: float) -> None:
        deadline = time.monotonic() + delay_s
        while not stop.wait(min(self.watchdog.state_interval_s, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return
            self.write_state()

    def _pump(self, reader: FrameReader, stop: threading.Event) -> str:
        """Publish the reader's frames; return finished, stopped, or why the source has to be reopened."""
        timeout_s = self.watchdog.no_frame_timeout_s
        while not stop.is_set():
            if self.max_frames is not None and self.state.frames_captured >= self.max_frames:
                return _FINISHED
            item = reader.slot.take(0.1)
            if item is None and reader.done.is_set():
                item = reader.slot.take(0)  # the reader's last frame may have arrived just before it ended
                if item is None:
                    return reader.error or _FINISHED
            if item is not None:
                if not self.state.connected:
                    self._connected(item)
                self._publish(item, stop)
            elif reader.stalled_s(time.monotonic()) > timeout_s:
                what = "delivered no frame" if reader.connected.is_set() else "did not open"
                return f"{self.state.source} {what} for {timeout_s:g} s"
            self.state.frames_read = self._read_before + reader.frames_read
            self.write_state()
        return _STOPPED

    def _connected(self, item: Captured) -> None:
        height, width = item.image.shape[:2]
        self.state.width, self.state.height = output_size(width, height, self.camera.width, self.camera.height)
        self.state.state, self.state.connected = "connected", True
        log.info("%s: connected to %s (%dx%d, sent as %dx%d)", self.camera.id, self.state.source, width, height,
                 self.state.width, self.state.height)
        self.write_state(force=True)

    def _publish(self, item: Captured, stop: threading.Event) -> None:
        import cv2

        image = item.image
        height, width = image.shape[:2]
        size = output_size(width, height, self.camera.width, self.camera.height)
        if size != (width, height):
            shrink = size[0] < width
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.camera.quality])
        if not ok:
            raise SourceError("JPEG encoding failed")
        try:
            while not self.appender.room():  # a file waits for ingest rather than overrun the stream
                if self.state.state != "waiting for ingest":
                    log.info("%s: %d frames wait for ingest (group %r); reading paused", self.camera.id,
                             len(self.appender.waiting), self.appender.group)
                    self.state.state = "waiting for ingest"
                self.write_state()
                if stop.wait(0.05):
                    return
            _, dropped = self.appender.append(
                self.camera.id, buffer.tobytes(), timestamp=item.timestamp, priority=self.camera.priority,
                capabilities=self.camera.capabilities, traceparent=new_traceparent(), width=size[0],
                height=size[1], metadata={"source_frame": item.index},
            )
        except redis_lib.RedisError as exc:
            self._skipped_before += 1
            self._error(f"redis: {exc}")
            if not self._redis_down:
                log.warning("%s: cannot append frames: %s", self.camera.id, exc)
            self._redis_down = True
            stop.wait(0.5)
            return
        if self._redis_down:
            log.info("%s: appending frames again", self.camera.id)
            self._redis_down = False
        self.state.state = "connected"
        self._skipped_before += dropped
        self.state.frames_captured += 1
        self.state.last_frame_at = item.timestamp
        self._sent_at.append(time.monotonic())

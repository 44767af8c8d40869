"""Many cameras: one CameraCapture thread each, so one broken camera never stalls another."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..cameras import CaptureConfig
from ..config import Settings
from .camera import CameraCapture
from .sources import prepare_video_backends, scrub

log = logging.getLogger(__package__)  # detektr.capture, the name its log lines have always had


class CaptureSupervisor:
    """Runs one CameraCapture per camera, each in its own thread, so one broken camera never stalls another."""

    def __init__(
        self,
        redis: Any,
        settings: Settings,
        config: CaptureConfig,
        *,
        fail_fast: bool = False,
        max_frames: int | None = None,
    ) -> None:
        prepare_video_backends()
        self.captures = {
            camera.id: CameraCapture(redis, settings, camera, config.watchdog, fail_fast=fail_fast,
                                     max_frames=max_frames)
            for camera in config.cameras
        }
        self._threads: list[threading.Thread] = []

    def start(self, stop: threading.Event) -> None:
        """Start every camera's thread."""
        for camera_id, capture in self.captures.items():
            thread = threading.Thread(target=self._guard, args=(capture, stop), name=f"capture-{camera_id}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    @staticmethod
    def _guard(capture: CameraCapture, stop: threading.Event) -> None:
        try:
            capture.run(stop)
        except Exception as exc:  # never let one camera take the process down; the reason goes to status
            capture.failure = scrub(f"{type(exc).__name__}: {exc}", capture.camera.source)
            log.error("%s: capture stopped: %s", capture.camera.id, capture.failure)

    def running(self) -> bool:
        """Whether any camera is still capturing."""
        return any(thread.is_alive() for thread in self._threads)

    def join(self, timeout_s: float = 10.0) -> bool:
        """Wait for every camera's thread; return whether all ended within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.running()

    @property
    def failures(self) -> dict[str, str]:
        """Cameras that gave up (fail_fast, or an unexpected error), with the reason."""
        return {camera_id: c.failure for camera_id, c in self.captures.items() if c.failure}

    def run(self, stop: threading.Event) -> int:
        """Capture until `stop` is set or every camera has ended; 0, or 2 when a camera failed."""
        self.start(stop)
        while self.running() and not stop.wait(0.2):
            pass
        stop.set()
        self.join()
        return 2 if self.failures else 0

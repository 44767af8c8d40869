"""`detektr inject`: a load generator that writes real JPEG frames from synthetic cameras."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .producer import FrameProducer
from .synthetic import SyntheticCamera


@dataclass(frozen=True)
class InjectReport:
    """How many frames were written, over how long."""

    sent: int
    elapsed_s: float

    @property
    def fps(self) -> float:
        """Frames written per second."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def render_jpegs(cameras: int, width: int, height: int, quality: int, distinct: int) -> dict[str, list[bytes]]:
    """Pre-render `distinct` JPEG frames per camera, so that encoding does not limit the rate."""
    rendered = {}
    for number in range(1, cameras + 1):
        camera = SyntheticCamera(f"cam{number:02d}", width, height)
        rendered[camera.camera_id] = [camera.jpeg(i, quality) for i in range(distinct)]
    return rendered


def inject(
    producer: FrameProducer,
    *,
    rate_fps: float,
    duration_s: float,
    cameras: int = 1,
    width: int = 640,
    height: int = 360,
    quality: int = 80,
    capabilities: Iterable[str] | None = None,
    priority: int = 0,
    distinct_frames: int = 30,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
) -> InjectReport:
    """Write frames at `rate_fps` per camera (0: as fast as possible) for `duration_s` seconds."""
    frames = render_jpegs(cameras, width, height, quality, distinct_frames)
    names = sorted(frames)
    capabilities = list(capabilities) if capabilities else None
    stop = stop or threading.Event()
    total_rate = rate_fps * cameras
    sent = 0
    started = time.monotonic()
    while not stop.is_set():
        elapsed = time.monotonic() - started
        if elapsed >= duration_s or (max_frames is not None and sent >= max_frames):
            break
        due = int(elapsed * total_rate) + 1 - sent if total_rate > 0 else 64
        if max_frames is not None:
            due = min(due, max_frames - sent)
        if due <= 0:
            stop.wait(min(0.01, 1.0 / total_rate))
            continue
        batch: list[tuple[str, bytes, dict[str, Any]]] = []
        for i in range(sent, sent + due):
            camera = names[i % cameras]
            data = frames[camera][(i // cameras) % distinct_frames]
            batch.append((camera, data, {"capabilities": capabilities, "priority": priority}))
        producer.add_many(batch)
        sent += due
    return InjectReport(sent, time.monotonic() - started)

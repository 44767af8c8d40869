"""One captured camera's state in Redis: written by its capture, read back by `capture_status`."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from .. import keys


@dataclass
class CameraState:
    """What `detektr status` shows for one captured camera (kept in Redis under keys.capture_state)."""

    camera_id: str
    source: str
    kind: str
    live: bool
    state: str = "starting"
    connected: bool = False
    fps: float = 0.0
    frames_read: int = 0
    frames_captured: int = 0
    frames_skipped: int = 0
    reconnects: int = 0
    width: int = 0
    height: int = 0
    last_frame_at: float = 0.0
    last_error: str = ""
    last_error_at: float = 0.0
    started_at: float = field(default_factory=time.time)

    def fields(self) -> dict[str, str]:
        """The state as a Redis hash."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(connected=int(self.connected), live=int(self.live), fps=round(self.fps, 2))
        values.update(updated_at=f"{time.time():.3f}", host=socket.gethostname(), pid=os.getpid())
        return {name: str(value) for name, value in values.items()}


_INT_FIELDS = ("frames_read", "frames_captured", "frames_skipped", "reconnects", "width", "height", "pid")
_FLOAT_FIELDS = ("fps", "last_frame_at", "last_error_at", "started_at", "updated_at")
_BOOL_FIELDS = ("connected", "live")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def capture_status(redis: Any, stale_after_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """Every captured camera's state, by camera id; `alive` is false when its process stopped writing it."""
    cameras: dict[str, dict[str, Any]] = {}
    now = time.time()
    for raw_id in sorted(redis.smembers(keys.CAPTURE_CAMERAS)):
        camera_id = _text(raw_id)
        stored = {_text(k): _text(v) for k, v in redis.hgetall(keys.capture_state(camera_id)).items()}
        if not stored:
            continue
        state: dict[str, Any] = dict(stored)
        for name in _INT_FIELDS:
            state[name] = int(float(stored.get(name) or 0))
        for name in _FLOAT_FIELDS:
            state[name] = float(stored.get(name) or 0)
        for name in _BOOL_FIELDS:
            state[name] = stored.get(name) == "1"
        state["alive"] = now - state["updated_at"] <= stale_after_s
        if not state["alive"]:
            state["connected"], state["fps"] = False, 0.0
        cameras[camera_id] = state
    return cameras

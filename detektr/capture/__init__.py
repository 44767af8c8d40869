"""`detektr capture`: cameras (RTSP and other URLs, video files, devices, synthetic) into the input stream.

Per camera, a `FrameReader` thread reads the source into a `FrameSlot` (live: the newest frame wins;
files: every frame waits its turn). The camera's own thread (`CameraCapture`) resizes, encodes JPEG,
stores the bytes by reference and appends the frame with a fresh traceparent (`StreamAppender`,
which also keeps a live camera from queueing stale frames for ingest). That thread is the reader's
watchdog: a source that errors or stalls is abandoned and opened again after an exponential
backoff, forever. `CaptureSupervisor` runs one `CameraCapture` thread per camera. Each camera's
state is kept in Redis (`capture_status`). Sources are only ever logged or stored redacted.
"""

from __future__ import annotations

from .appender import stream_id_after
from .camera import backoff_s, new_traceparent, output_size
from .reader import Captured, FrameSlot
from .sources import RateLimiter, SourceError, prepare_video_backends, scrub
from .state import capture_status
from .supervisor import CaptureSupervisor

__all__ = [
    "CaptureSupervisor",
    "Captured",
    "FrameSlot",
    "RateLimiter",
    "SourceError",
    "backoff_s",
    "capture_status",
    "new_traceparent",
    "output_size",
    "prepare_video_backends",
    "scrub",
    "stream_id_after",
]

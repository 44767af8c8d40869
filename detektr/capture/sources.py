"""Video sources: opening and reading URLs, files, devices and synthetic scenes, and saying why one failed."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from ..cameras import CameraConfig, device_index
from ..redaction import redact_url, url_secrets

FFMPEG_CAPTURE_OPTIONS = "rtsp_transport;tcp"
"""FFmpeg options for every URL (`OPENCV_FFMPEG_CAPTURE_OPTIONS`): RTSP interleaved over TCP."""

SYNTHETIC_FPS = 15.0
"""Frame rate of a `synthetic` source without `fps`."""

_LIVE_FILE_FPS = 25.0
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


class RateLimiter:
    """A frames/s cap: `admit` thins a live source, `delay_s` paces a file without dropping frames."""

    def __init__(self, fps: float | None) -> None:
        self.period_s = 1.0 / fps if fps else 0.0
        self._next_due: float | None = None

    def delay_s(self, now: float) -> float:
        """How long to wait before the next frame is due (0 when it is due)."""
        if not self.period_s or self._next_due is None:
            return 0.0
        return max(0.0, self._next_due - now)

    def admit(self, now: float) -> bool:
        """Whether a frame read at `now` (monotonic seconds) is sent on; a tenth of a period early counts as due."""
        if not self.period_s:
            return True
        if self._next_due is not None and now < self._next_due - 0.1 * self.period_s:
            return False
        late = self._next_due is None or now - self._next_due > self.period_s
        self._next_due = now + self.period_s if late else self._next_due + self.period_s
        return True


class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line and holds no credentials."""


def scrub(text: str, source: str) -> str:
    """`text` with a source's password, user name and full form replaced by the redacted source."""
    redacted = redact_url(source)
    if redacted == source:
        return text
    text = text.replace(source, redacted)
    for secret in url_secrets(source):
        text = text.replace(secret, "***")
    return text


def prepare_video_backends() -> None:
    """Read RTSP over TCP and quiet OpenCV's and FFmpeg's own logging (which may print URLs).

    Call before any capture thread starts: the environment is read by OpenCV at each open. Values
    already in the environment win.
    """
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_CAPTURE_OPTIONS)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def diagnose(source: str, timeout_s: float) -> str:
    """Why a source did not open, in one line without credentials: file, device, DNS and TCP checks."""
    from ..cameras import source_kind

    kind = source_kind(source)
    if kind == "file":
        path = Path(source)
        if not path.exists():
            return f"cannot open {source}: no such file"
        if path.is_dir():
            return f"cannot open {source}: it is a directory"
        if not os.access(path, os.R_OK):
            return f"cannot open {source}: permission denied"
        return f"cannot open {source}: not a video that OpenCV's FFMPEG backend can read"
    if kind == "device":
        device = f"/dev/video{device_index(source)}"
        if not Path(device).exists():
            return f"cannot open device {source}: {device} does not exist"
        return f"cannot open device {device}: busy, no permission, or not a capture device"
    redacted = redact_url(source)
    parts = urlsplit(source)
    host, scheme = parts.hostname, parts.scheme.lower()
    if not host:
        return f"cannot open {redacted}: the URL names no host"
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return f"cannot open {redacted}: the port is not a number"
    try:
        socket.getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError):
        return f"cannot open {redacted}: host {host!r} does not resolve"
    if port and scheme in _DEFAULT_PORTS:
        try:
            status = _rtsp_status(parts._replace(netloc=f"{host}:{port}").geturl(), host, port,
                                  min(timeout_s, 5.0)) if scheme == "rtsp" else None
        except ConnectionRefusedError:
            return f"cannot open {redacted}: {host}:{port} refused the connection"
        except TimeoutError:
            return f"cannot open {redacted}: {host}:{port} did not answer within {min(timeout_s, 5.0):g} s"
        except OSError as exc:
            return f"cannot open {redacted}: {host}:{port}: {exc.strerror or exc}"
        if status == 404:
            return f"cannot open {redacted}: the server has no stream at {parts.path or '/'!r} (404)"
        if status == 401 and not (parts.username or parts.password):
            return f"cannot open {redacted}: the server asks for credentials and the URL has none (401)"
        if status == 401:
            return f"cannot open {redacted}: the server did not accept the credentials, or has no such path (401)"
    return f"cannot open {redacted}: the server answered but delivered no video (check the path and credentials)"


def _rtsp_status(url: str, host: str, port: int, timeout_s: float) -> int | None:
    """The status code of an RTSP DESCRIBE without credentials (None when the answer is not RTSP)."""
    request = f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode()
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        connection.sendall(request)
        answer = connection.recv(512).split(b"\r\n", 1)[0].split()
    if len(answer) >= 2 and answer[0].startswith(b"RTSP/") and answer[1].isdigit():
        return int(answer[1])
    return None


class VideoSource(Protocol):
    """What a reader reads: opened once, read until None (end of a file), closed."""

    def open(self) -> None:
        """Open the source; raise SourceError with the reason."""

    def read(self) -> np.ndarray | None:
        """The next BGR frame; None at the end of a file; raise SourceError when a live source fails."""

    def rewind(self) -> bool:
        """Go back to the first frame (files); False when that is not possible."""

    def close(self) -> None:
        """Release the source."""


class OpenCVSource:
    """A URL or file read with OpenCV's FFMPEG backend, or a device read with V4L2."""

    def __init__(self, camera: CameraConfig, timeout_s: float) -> None:
        self.camera = camera
        self.timeout_s = timeout_s
        self._capture: Any = None
        self._frames = 0
        self._pace = RateLimiter(None)

    def open(self) -> None:
        """Open the source with open and read timeouts; raise SourceError with a diagnosis."""
        import cv2

        camera = self.camera
        timeout_ms = int(self.timeout_s * 1000)
        if camera.kind == "device":
            capture = cv2.VideoCapture(device_index(camera.source), cv2.CAP_V4L2)
        else:
            capture = cv2.VideoCapture(camera.source, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms,
            ])
        if not capture.isOpened():
            capture.release()
            raise SourceError(diagnose(camera.source, self.timeout_s))
        self._capture = capture
        if camera.kind == "file" and camera.is_live:  # a live file plays at its own rate, like a camera
            native = capture.get(cv2.CAP_PROP_FPS)
            self._pace = RateLimiter(native if 1 <= native <= 1000 else _LIVE_FILE_FPS)

    def read(self) -> np.ndarray | None:
        """The next frame (see VideoSource.read)."""
        delay = self._pace.delay_s(time.monotonic())
        if delay:
            time.sleep(delay)
        self._pace.admit(time.monotonic())
        ok, image = self._capture.read()
        if ok and image is not None:
            self._frames += 1
            return image
        redacted = redact_url(self.camera.source)
        if self.camera.kind != "file":
            raise SourceError(f"{redacted} stopped delivering frames (read failed or timed out)")
        if self._frames == 0:
            raise SourceError(f"cannot read {redacted}: it has no video frame that decodes")
        return None

    def rewind(self) -> bool:
        """Back to the first frame of a file."""
        import cv2

        return bool(self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def close(self) -> None:
        """Release OpenCV's capture."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class SyntheticSource:
    """Frames drawn by SyntheticCamera at a steady rate, like a camera (`fps`, default 15)."""

    def __init__(self, camera: CameraConfig) -> None:
        self.camera = camera
        width = camera.width or (round(camera.height * 16 / 9) if camera.height else 640)
        self.size = (width, camera.height or round(width * 9 / 16))
        self._pace = RateLimiter(camera.fps or SYNTHETIC_FPS)
        self._renderer: Any = None
        self._index = 0

    def open(self) -> None:
        """Prepare the scene."""
        from ..synthetic import SyntheticCamera

        self._renderer = SyntheticCamera(self.camera.id, *self.size)

    def read(self) -> np.ndarray | None:
        """The next frame, when it is due."""
        delay = self._pace.delay_s(time.monotonic())
        if delay:
            time.sleep(delay)
        self._pace.admit(time.monotonic())
        self._index += 1
        return self._renderer.render(self._index)

    def rewind(self) -> bool:
        """Synthetic sources never end."""
        return True

    def close(self) -> None:
        """Nothing to release."""
        self._renderer = None


def open_source(camera: CameraConfig, timeout_s: float) -> VideoSource:
    """The source object for a camera (not yet opened)."""
    if camera.kind == "synthetic":
        return SyntheticSource(camera)
    return OpenCVSource(camera, timeout_s)

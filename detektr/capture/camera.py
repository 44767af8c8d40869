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

import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import redis as redis_lib

from .. import keys
from ..cameras import CameraConfig, CaptureConfig, WatchdogConfig, device_index
from ..config import Settings, redact_url
from ..producer import FrameProducer

log = logging.getLogger(__package__)  # detektr.capture, the name its log lines have always had

FFMPEG_CAPTURE_OPTIONS = "rtsp_transport;tcp"
"""FFmpeg options for every URL (`OPENCV_FFMPEG_CAPTURE_OPTIONS`): RTSP interleaved over TCP."""

SYNTHETIC_FPS = 15.0
"""Frame rate of a `synthetic` source without `fps`."""

FPS_WINDOW_S = 2.0
"""The `fps` in a camera's state counts the frames sent over this many seconds."""

_LIVE_FILE_FPS = 25.0
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}
_FINISHED, _STOPPED = "finished", "stopped"


# --- decisions, no I/O ---------------------------------------------------------------------------

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


def stream_id_after(first: str, second: str) -> bool:
    """Whether stream entry id `first` comes after `second` (ids are `milliseconds-sequence`)."""
    a_ms, _, a_seq = first.partition("-")
    b_ms, _, b_seq = second.partition("-")
    return (int(a_ms), int(a_seq or 0)) > (int(b_ms), int(b_seq or 0))


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


# --- reading sources -----------------------------------------------------------------------------

class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line and holds no credentials."""


def scrub(text: str, source: str) -> str:
    """`text` with a source's password, user name and full form replaced by the redacted source."""
    redacted = redact_url(source)
    if redacted == source:
        return text
    text = text.replace(source, redacted)
    parts = urlsplit(source)
    for secret in (parts.password, parts.username):
        if secret:
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


# --- writing the stream --------------------------------------------------------------------------

_MAKE_ROOM = """
-- KEYS[1]: the input stream; KEYS[2..]: bytes keys of this camera's frames not yet known as taken.
-- ARGV[1]: ingest's consumer group; ARGV[2]: how many untaken frames to keep; ARGV[3..]: their entry
-- ids, oldest first. Frames past ingest's last-delivered id are untaken; the oldest beyond the keep
-- count are deleted with their bytes. Returns {last-delivered id, deleted entry ids...}.
local last = '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, group in ipairs(groups) do
    local name, id
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1] elseif group[i] == 'last-delivered-id' then id = group[i + 1] end
    end
    if name == ARGV[1] then last = id end
  end
end
local last_ms, last_seq = string.match(last, '^(%d+)-(%d+)$')
last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
local untaken = {}
for i = 3, #ARGV do
  local ms, seq = string.match(ARGV[i], '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if ms > last_ms or (ms == last_ms and seq > last_seq) then table.insert(untaken, i) end
end
local result = {last}
for j = 1, #untaken - tonumber(ARGV[2]) do
  local i = untaken[j]
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then table.insert(result, ARGV[i]) end
  redis.call('DEL', KEYS[i - 1])
end
return result
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamAppender:
    """Appends one camera's frames by reference and tracks those still waiting for ingest.

    A live camera keeps at most `limit` frames waiting (older untaken ones are deleted with their
    bytes, atomically against ingest reading them); a file waits instead (`room`).
    """

    def __init__(self, redis: Any, producer: FrameProducer, group: str, limit: int, live: bool) -> None:
        self.redis = redis
        self.producer = producer
        self.group = group
        self.limit = limit
        self.live = live
        self.waiting: deque[tuple[str, str]] = deque()  # (entry id, bytes key), oldest first
        self._script = redis.register_script(_MAKE_ROOM)

    def _call(self, keep: int, client: Any = None) -> Any:
        ids = [entry for entry, _ in self.waiting]
        byte_keys = [key for _, key in self.waiting]
        return self._script(keys=[self.producer.stream, *byte_keys], args=[self.group, keep, *ids], client=client)

    def _settle(self, result: list[Any]) -> int:
        last, deleted = _text(result[0]), {_text(entry) for entry in result[1:]}
        self.waiting = deque(
            (entry, key) for entry, key in self.waiting if entry not in deleted and stream_id_after(entry, last)
        )
        return len(deleted)

    def room(self) -> bool:
        """Whether a file's next frame may be appended without passing the limit (live: always; append drops)."""
        if self.live or len(self.waiting) < self.limit:
            return True
        self._settle(self._call(keep=len(self.waiting)))
        return len(self.waiting) < self.limit

    def append(self, camera_id: str, data: bytes, **options: Any) -> tuple[str, int]:
        """Append one frame in one round trip; return its frame id and how many stale frames were dropped."""
        fields = self.producer.entry(camera_id, data, **options)
        fields["image_key"] = keys.frame_bytes(fields["frame_id"])
        pipe = self.redis.pipeline(transaction=False)
        check = self.live and bool(self.waiting)  # a file's waiting frames are settled by `room` alone
        if check:
            self._call(keep=self.limit - 1, client=pipe)
        pipe.set(fields["image_key"], data, ex=self.producer.frame_ttl_s)
        pipe.xadd(self.producer.stream, fields, maxlen=self.producer.maxlen, approximate=True)
        results = pipe.execute()
        dropped = self._settle(results[0]) if check else 0
        self.waiting.append((_text(results[-1]), fields["image_key"]))
        return fields["frame_id"], dropped


# --- one camera ----------------------------------------------------------------------------------

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


# --- many cameras --------------------------------------------------------------------------------

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


# --- status --------------------------------------------------------------------------------------

_INT_FIELDS = ("frames_read", "frames_captured", "frames_skipped", "reconnects", "width", "height", "pid")
_FLOAT_FIELDS = ("fps", "last_frame_at", "last_error_at", "started_at", "updated_at")
_BOOL_FIELDS = ("connected", "live")


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

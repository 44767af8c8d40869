"""Fixtures for the capture tests: a real Valkey database, test videos, real RTSP servers, running captures."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from detektr.cameras import CaptureConfig, build_config
from detektr.capture import CaptureSupervisor, prepare_video_backends
from detektr.config import Settings, load_settings
from tests.conftest import wait_for as _wait_for

from .rtsp import RtspServer, missing_reason

BARCODE_BITS = 8


@pytest.fixture(scope="session", autouse=True)
def _quiet_video_backends() -> None:
    """Configure OpenCV's FFmpeg before any test touches it (it reads its log level once per process)."""
    prepare_video_backends()


@pytest.fixture(scope="module")
def capture_redis_url(module_db_url: str) -> str:
    """A Redis URL (a database of this test module's own) on the session's real Valkey server."""
    return module_db_url


@pytest.fixture()
def capture_redis(capture_redis_url: str) -> Iterator[redis.Redis]:
    """A client on a database flushed before each test."""
    client = redis.Redis.from_url(capture_redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture()
def settings(capture_redis_url: str) -> Settings:
    """Settings pointing at the test database."""
    return load_settings(redis_url=capture_redis_url)


def barcode_frame(index: int, width: int, height: int) -> np.ndarray:
    """A frame whose number is drawn as 8 black or white vertical bands (robust to lossy codecs)."""
    frame = np.zeros((height, width, 3), np.uint8)
    band = width // BARCODE_BITS
    for bit in range(BARCODE_BITS):
        if index >> bit & 1:
            frame[:, bit * band:(bit + 1) * band] = 255
    return frame


def read_barcode(image: np.ndarray) -> int:
    """The frame number drawn by `barcode_frame`, read from the middle of each band."""
    height, width = image.shape[:2]
    band = width // BARCODE_BITS
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return sum(1 << bit for bit in range(BARCODE_BITS)
               if gray[height // 4:3 * height // 4, bit * band + band // 4:(bit + 1) * band - band // 4].mean() > 128)


def write_video(path: Path, frames: int, width: int = 320, height: int = 240, fps: float = 25.0,
                fourcc: str = "mp4v") -> Path:
    """Write a video of barcode frames numbered 0..frames-1 with OpenCV."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for index in range(frames):
        writer.write(barcode_frame(index, width, height))
    writer.release()
    return path


def config(*cameras: dict[str, Any], **watchdog: float) -> CaptureConfig:
    """A validated capture configuration; fast watchdog timings unless given."""
    timings = {"no_frame_timeout_s": 2.0, "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "state_interval_s": 0.2}
    return build_config({"cameras": list(cameras), "watchdog": timings | watchdog})


@contextlib.contextmanager
def running(supervisor: CaptureSupervisor) -> Iterator[threading.Event]:
    """Run a supervisor in the background; stop it (and check that it stopped) on the way out."""
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "capture did not stop within 15 s"


@contextlib.contextmanager
def reading_group(client: redis.Redis, settings: Settings) -> Iterator[list[bytes]]:
    """Read the input stream with ingest's consumer group in the background, as ingest would; yield the ids."""
    stream, group = settings.input_stream, settings.ingest.group
    client.xgroup_create(stream, group, id="0", mkstream=True)
    read: list[bytes] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for _, entries in client.xreadgroup(group, "test-ingest", {stream: ">"}, count=100, block=50) or []:
                read.extend(entry_id for entry_id, _ in entries)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        yield read
    finally:
        stop.set()
        thread.join(5)


wait_for = functools.partial(_wait_for, timeout_s=20, interval_s=0.05)
"""The suite's wait_for with the capture tests' pace: 20 s at most, polled every 50 ms."""


def camera_frames(client: redis.Redis, stream: str, camera_id: str) -> list[dict[str, Any]]:
    """This camera's entries on the input stream, oldest first, with text fields and the decoded image."""
    frames = []
    for entry_id, fields in client.xrange(stream):
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        if decoded["camera_id"] != camera_id:
            continue
        data = client.get(decoded["image_key"])
        decoded["entry_id"] = entry_id.decode()
        decoded["image"] = None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        frames.append(decoded)
    return frames


@pytest.fixture()
def rtsp_server(tmp_path: Path) -> Iterator[Callable[..., RtspServer]]:
    """A factory of real RTSP servers on loopback (GStreamer), all stopped after the test."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    servers: list[RtspServer] = []

    def start(**options: Any) -> RtspServer:
        server = RtspServer(tmp_path / f"rtsp-{len(servers)}.log", **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()

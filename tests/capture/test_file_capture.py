"""Capture from video files, synthetic cameras and bad sources, into a real Valkey server."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from detektr.capture import CaptureSupervisor, capture_status
from detektr.frame import parse_entry

from .conftest import camera_frames, config, read_barcode, reading_group, running, wait_for, write_video

SECRET = "pa55word-do-not-print"


def run_to_end(supervisor: CaptureSupervisor, timeout_s: float = 30) -> int:
    """Run a supervisor whose cameras all end by themselves; fail if they do not within `timeout_s`."""
    result: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=lambda: result.append(supervisor.run(stop)), daemon=True)
    thread.start()
    thread.join(timeout_s)
    stop.set()
    assert result, f"capture did not finish within {timeout_s} s"
    return result[0]


@pytest.mark.parametrize(("name", "fourcc"), [("clip.mp4", "mp4v"), ("clip.avi", "MJPG")])
def test_a_video_file_is_captured_completely_in_order(tmp_path, capture_redis, settings, name, fourcc):
    frames = 90  # more than a file may have waiting for ingest (64): capture waits for the reader below
    path = write_video(tmp_path / name, frames, 320, 240, fourcc=fourcc)
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "cam01", "source": str(path), "width": 160, "capabilities": ["sample_processing"], "priority": 3}))

    with reading_group(capture_redis, settings):
        assert run_to_end(supervisor) == 0

    captured = camera_frames(capture_redis, settings.input_stream, "cam01")
    assert [read_barcode(f["image"]) for f in captured] == list(range(frames))  # every frame once, in order
    assert all(f["image"].shape == (120, 160, 3) for f in captured)
    assert len({f["frame_id"] for f in captured}) == frames
    assert len({f["traceparent"] for f in captured}) == frames
    for entry_id, fields in capture_redis.xrange(settings.input_stream):
        entry, inline = parse_entry(fields, settings.frames)  # the input-stream contract, as ingest checks it
        assert inline is None and entry.image_key and (entry.width, entry.height) == (160, 120)
        assert entry.capabilities == ("sample_processing",) and entry.priority == 3
        assert 0 < capture_redis.ttl(entry.image_key) <= settings.frames.ttl_s
    assert [int(f["metadata"].split(":")[1].rstrip("}")) for f in captured] == list(range(frames))
    state = capture_status(capture_redis)["cam01"]
    assert (state["state"], state["frames_captured"], state["frames_skipped"]) == ("finished", frames, 0)
    assert (state["width"], state["height"], state["kind"], state["live"]) == (160, 120, "file", False)


def test_a_file_waits_for_a_slow_ingest_and_loses_nothing(tmp_path, capture_redis, settings):
    frames, limit = 40, 3
    path = write_video(tmp_path / "clip.mp4", frames, 160, 120)
    stream, group = settings.input_stream, settings.ingest.group
    capture_redis.xgroup_create(stream, group, id="0", mkstream=True)  # as ingest does
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "cam01", "source": str(path), "max_queued": limit}))
    seen, most_waiting, states = [], 0, set()
    with running(supervisor):
        deadline = time.monotonic() + 30
        while len(seen) < frames and time.monotonic() < deadline:
            most_waiting = max(most_waiting, capture_redis.xinfo_groups(stream)[0]["lag"] or 0)
            states.add(supervisor.captures["cam01"].state.state)
            reply = capture_redis.xreadgroup(group, "slow-ingest", {stream: ">"}, count=1, block=100)
            for _, entries in reply:
                for _, fields in entries:
                    seen.append(read_barcode(camera_frames_image(capture_redis, fields)))
            time.sleep(0.02)  # a consumer slower than the file can be read
    assert seen == list(range(frames))
    assert most_waiting <= limit
    assert "waiting for ingest" in states


def camera_frames_image(client, fields):
    """Decode the image an entry refers to."""
    import cv2
    import numpy as np

    data = client.get(fields[b"image_key"])
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_a_live_camera_never_queues_stale_frames(capture_redis, settings):
    stream, group = settings.input_stream, settings.ingest.group
    capture_redis.xgroup_create(stream, group, id="0", mkstream=True)
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "live", "source": "synthetic", "fps": 60, "width": 320}))
    ages, delivered = [], 0
    with running(supervisor):
        wait_for(lambda: supervisor.captures["live"].state.frames_captured >= 5, message="first frames")
        for _ in range(10):  # ingest reading five frames/s from a 60 frames/s camera
            time.sleep(0.2)
            reply = capture_redis.xreadgroup(group, "slow-ingest", {stream: ">"}, count=100)
            entries = reply[0][1] if reply else []
            delivered += len(entries)
            ages += [time.time() - float(fields[b"timestamp"]) for _, fields in entries]
            assert len(entries) <= 1  # only the newest frame was waiting
        state = supervisor.captures["live"].state
        skipped = supervisor.captures["live"]._skipped()
    assert delivered >= 8
    assert max(ages) < 0.5, f"stale frames delivered: ages {ages}"
    assert state.frames_captured > 3 * delivered and skipped >= state.frames_captured - delivered - 1
    assert capture_redis.xlen(stream) <= delivered + 1
    # stale frames were deleted together with their bytes
    assert len(capture_redis.keys("detektr:frame:*")) <= delivered + 1


def test_the_stream_and_the_stored_frames_are_bounded(tmp_path, capture_redis, capture_redis_url):
    from detektr.config import load_settings

    settings = load_settings(redis_url=capture_redis_url, input_maxlen=10)
    path = write_video(tmp_path / "clip.avi", 400, 64, 48, fourcc="MJPG")
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "cam01", "source": str(path), "max_queued": 10_000}))
    assert run_to_end(supervisor) == 0
    assert supervisor.captures["cam01"].state.frames_captured == 400
    assert capture_redis.xlen(settings.input_stream) < 400  # MAXLEN ~ 10 trims whole nodes of entries
    key = capture_redis.xrange(settings.input_stream, count=1)[0][1][b"image_key"]
    assert 0 < capture_redis.ttl(key) <= settings.frames.ttl_s


def test_a_capped_file_is_paced_not_thinned(tmp_path, capture_redis, settings):
    path = write_video(tmp_path / "clip.mp4", 12, 160, 120)
    supervisor = CaptureSupervisor(capture_redis, settings, config({"id": "cam01", "source": str(path), "fps": 20}))
    started = time.monotonic()
    assert run_to_end(supervisor) == 0
    elapsed = time.monotonic() - started
    captured = camera_frames(capture_redis, settings.input_stream, "cam01")
    assert [read_barcode(f["image"]) for f in captured] == list(range(12))
    assert elapsed >= 11 / 20 * 0.9
    stamps = [float(f["timestamp"]) for f in captured]
    assert min(b - a for a, b in zip(stamps, stamps[1:], strict=False)) >= 0.05 * 0.85


def _not_a_video(tmp_path: Path) -> str:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    return str(path)


@pytest.mark.parametrize(("make_source", "expected"), [
    (_not_a_video, "notes.mp4: not a video that OpenCV's FFMPEG backend can read"),
    (lambda tmp: str(tmp / "absent.mp4"), "absent.mp4: no such file"),
    (lambda tmp: str(tmp), "it is a directory"),
    (lambda tmp: f"rtsp://admin:{SECRET}@camera.invalid/stream",
     "cannot open rtsp://***@camera.invalid/stream: host 'camera.invalid' does not resolve"),
    (lambda tmp: f"rtsp://admin:{SECRET}@127.0.0.1:{_closed_port()}/stream", "refused the connection"),
    (lambda tmp: "57", "cannot open device 57: /dev/video57 does not exist"),
])
def test_bad_sources_give_a_clear_one_line_error(tmp_path, capture_redis, settings, make_source, expected):
    supervisor = CaptureSupervisor(capture_redis, settings, config({"id": "bad", "source": make_source(tmp_path)}),
                                   fail_fast=True)
    assert run_to_end(supervisor) == 2
    reason = supervisor.failures["bad"]
    assert expected in reason and "\n" not in reason and SECRET not in reason
    state = capture_status(capture_redis)["bad"]
    assert state["state"] == "failed" and state["last_error"] == reason and not state["connected"]
    assert SECRET not in str(capture_redis.hgetall("detektr:capture:bad"))


def _closed_port() -> int:
    from .rtsp import free_port

    return free_port()


def test_a_configured_camera_retries_until_its_file_appears(tmp_path, capture_redis, settings):
    path = tmp_path / "late.mp4"
    supervisor = CaptureSupervisor(capture_redis, settings, config({"id": "late", "source": str(path)}))
    with running(supervisor):
        wait_for(lambda: capture_status(capture_redis).get("late", {}).get("reconnects", 0) >= 2,
                 message="two reconnection attempts")
        state = capture_status(capture_redis)["late"]
        assert state["state"] in ("reconnecting", "connecting") and "no such file" in state["last_error"]
        write_video(tmp_path / "writing.mp4", 10, 160, 120)
        os.rename(tmp_path / "writing.mp4", path)
        wait_for(lambda: capture_status(capture_redis)["late"]["state"] == "finished", message="the file captured")
    state = capture_status(capture_redis)["late"]
    assert state["frames_captured"] == 10
    captured = camera_frames(capture_redis, settings.input_stream, "late")
    assert [read_barcode(f["image"]) for f in captured] == list(range(10))

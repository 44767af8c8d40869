"""`detektr capture` as a user runs it: one camera from options, several from a file, bad input, credentials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from detektr.capture import capture_status

from .conftest import camera_frames, read_barcode, wait_for, write_video

DETEKTR = [str(Path(sys.executable).parent / "detektr")]
SECRET = "s3cret-do-not-print"


def detektr(url: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `detektr [--log-level DEBUG] <args>` against the test database."""
    env = dict(os.environ, REDIS_URL=url)
    return subprocess.run([*DETEKTR, "--log-level", "DEBUG", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def test_one_camera_from_options_captures_a_whole_file(tmp_path, capture_redis, capture_redis_url, settings):
    path = write_video(tmp_path / "clip.mp4", 30, 320, 240)
    done = detektr(capture_redis_url, "capture", "--camera", "cam01", "--source", str(path), "--width", "160",
                   "--quality", "90", "--capabilities", "sample_processing")
    assert done.returncode == 0, done.stderr
    assert "cam01: 30 frames captured, 0 skipped, 0 reconnects (finished)" in done.stdout
    captured = camera_frames(capture_redis, settings.input_stream, "cam01")
    assert [read_barcode(f["image"]) for f in captured] == list(range(30))
    assert {f["image"].shape for f in captured} == {(120, 160, 3)}
    assert {f["capabilities"] for f in captured} == {"sample_processing"}


def test_several_cameras_from_a_file(tmp_path, capture_redis, capture_redis_url, settings):
    clip = write_video(tmp_path / "clip.avi", 20, 160, 120, fourcc="MJPG")
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(f"""
cameras:
  - id: replay
    source: {clip}
  - id: demo
    source: synthetic
    fps: 30
    width: 320
    priority: 4
""")
    done = detektr(capture_redis_url, "capture", "--config", str(cameras), "--max-frames", "12")
    assert done.returncode == 0, done.stderr
    assert len(camera_frames(capture_redis, settings.input_stream, "replay")) == 12
    demo = camera_frames(capture_redis, settings.input_stream, "demo")  # live: only the newest waits for ingest
    assert demo and demo[-1]["image"].shape == (180, 320, 3) and demo[-1]["priority"] == "4"
    status = capture_status(capture_redis)
    assert status["demo"]["frames_captured"] == 12 and status["demo"]["frames_skipped"] >= 11 - len(demo)


@pytest.mark.parametrize(("args", "expected"), [
    (["--camera", "cam01"], "give --config FILE, or --camera ID --source SOURCE"),
    (["--camera", "cam 01", "--source", "synthetic"], "cameras.0.id: String should match pattern"),
    (["--camera", "c", "--source", "synthetic", "--fps", "-1"], "cameras.0.fps: Input should be greater than 0"),
    (["--config", "/nonexistent/cameras.yaml"], "/nonexistent/cameras.yaml: No such file or directory"),
    (["--camera", "c", "--source", "/nonexistent/clip.mp4"], "c: cannot open /nonexistent/clip.mp4: no such file"),
    (["--camera", "c", "--source", f"rtsp://admin:{SECRET}@camera.invalid/live"],
     "c: cannot open rtsp://***@camera.invalid/live: host 'camera.invalid' does not resolve"),
])
def test_bad_input_is_one_clear_line_not_a_traceback(capture_redis_url, args, expected):
    done = detektr(capture_redis_url, "capture", *args)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("detektr capture:")]
    assert errors and expected in errors[0], done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout


def test_sigterm_stops_capture_and_leaves_the_state_stopped(capture_redis, capture_redis_url):
    env = dict(os.environ, REDIS_URL=capture_redis_url)
    process = subprocess.Popen([*DETEKTR, "capture", "--camera", "cam01", "--source", "synthetic", "--fps", "20"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: capture_status(capture_redis).get("cam01", {}).get("frames_captured", 0) >= 5,
                 message="frames from the capture process")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == 0, err
    state = capture_status(capture_redis)["cam01"]
    assert state["state"] == "stopped" and not state["connected"]


def test_credentials_never_reach_logs_or_status(capture_redis, capture_redis_url, rtsp_server):
    server = rtsp_server(user="viewer", password=SECRET)
    good = detektr(capture_redis_url, "capture", "--camera", "door", "--source", server.url(), "--max-frames", "5")
    assert good.returncode == 0, good.stderr
    assert "door: 5 frames captured" in good.stdout
    wrong = detektr(capture_redis_url, "capture", "--camera", "door", "--source",
                    server.url(password=SECRET[::-1]))
    assert wrong.returncode == 2
    assert "did not accept the credentials" in wrong.stderr
    shown = detektr(capture_redis_url, "status")
    shown_json = detektr(capture_redis_url, "status", "--json")
    assert shown.returncode == 0 and shown_json.returncode == 0, shown.stderr + shown_json.stderr
    door = [line for line in shown.stdout.splitlines() if line.startswith("door")]
    assert "rtsp://***@127.0.0.1" in door[0] and "failed" in door[0]
    assert "door: last error" in door[1] and "did not accept the credentials" in door[1]
    assert '"source": "rtsp://***@127.0.0.1' in shown_json.stdout
    everything = (good.stdout + good.stderr + wrong.stdout + wrong.stderr + str(capture_status(capture_redis))
                  + shown.stdout + shown_json.stdout)
    assert "rtsp://***@127.0.0.1" in everything
    for secret in (SECRET, SECRET[::-1], "viewer"):
        assert secret not in everything

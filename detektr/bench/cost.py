"""Cost of detektr's processes: RSS over a steady run, and CPU per frame (psutil)."""

from __future__ import annotations

import time
from typing import Any

import psutil
import redis

from ..inject import render_jpegs
from ..producer import FrameProducer
from .systems import detektr_system, wait_for

RATE = 100.0
WIDTH, HEIGHT = 1280, 720
CAPS = ["sample_processing"]


def _processes(system, client: redis.Redis) -> dict[str, psutil.Process]:
    found = {"ingest": psutil.Process(system.procs["ingest"].pid),
             "worker (main)": psutil.Process(system.procs["worker"].pid),
             "server": psutil.Process(int(client.info("server")["process_id"]))}
    for number, child in enumerate(sorted(found["worker (main)"].children(), key=lambda p: p.pid), 1):
        found[f"worker (child {number})"] = child
    return found


def _every_process_busy(client: redis.Redis, results: str, producer: FrameProducer, burst: list) -> None:
    """Warm-up: a burst at once, so that every worker process has decoded full-size frames before the
    run (at a steady 100 frames/s one process may otherwise get its first frame only later). A task of
    several frames is decoded in the process's helper thread, a single frame in its own thread: each
    has its first allocations then."""
    before = client.xlen(results)
    producer.add_many(burst)
    wait_for(lambda: client.xlen(results) - before >= len(burst), 30, "the warm-up burst's results")


def measure_cost(options, client: redis.Redis, url: str, log_dir) -> dict[str, Any]:
    """Run detektr at 100 frames/s of 1280x720 from `options.cameras` cameras for `options.cost_s` seconds."""
    system = detektr_system(options.concurrency, 0)
    system.start(url, log_dir)
    producer = FrameProducer(client, system.stream, maxlen=10_000, frame_ttl_s=300)
    jpegs = render_jpegs(options.cameras, WIDTH, HEIGHT, 80, 30)
    names = sorted(jpegs)
    try:
        deadline = time.monotonic() + 90
        while not client.exists(system.results) or client.xlen(system.results) == 0:
            if time.monotonic() > deadline or system.dead():
                raise RuntimeError(f"detektr did not come up for the cost run; logs in {log_dir}")
            producer.add_many([(names[0], jpegs[names[0]][0], {"capabilities": ["sample_processing"]})])
            time.sleep(0.5)
        frames = [(names[i % len(names)], jpegs[names[i % len(names)]][0], {"capabilities": CAPS})
                  for i in range(8 * options.concurrency)]
        _every_process_busy(client, system.results, producer, frames)  # tasks of several frames
        for _ in range(4):  # and one frame per process at once: single-frame tasks, as at a steady rate
            _every_process_busy(client, system.results, producer, frames[: options.concurrency])
        time.sleep(1.0)
        procs = _processes(system, client)
        rss: dict[str, list[tuple[float, int]]] = {name: [] for name in procs}
        cpu_at_warm: dict[str, float] = {}
        sent_at_warm = 0
        results_before = client.xlen(system.results)
        sent, started, next_sample = 0, time.perf_counter(), 0.0
        while (elapsed := time.perf_counter() - started) < options.cost_s:
            due = int(elapsed * RATE) + 1 - sent
            if due > 0:
                batch = []
                for i in range(sent, sent + due):
                    camera = names[i % len(names)]
                    batch.append((camera, jpegs[camera][(i // len(names)) % 30], {"capabilities": CAPS}))
                producer.add_many(batch)
                sent += due
            if elapsed >= next_sample:
                for name, proc in procs.items():
                    rss[name].append((elapsed, proc.memory_info().rss))
                if not cpu_at_warm and elapsed >= options.cost_warmup_s:
                    cpu_at_warm = {name: sum(proc.cpu_times()[:2]) for name, proc in procs.items()}
                    sent_at_warm = sent
                next_sample += 0.5
            time.sleep(0.002)
        cpu_end = {name: sum(proc.cpu_times()[:2]) for name, proc in procs.items()}
        frames = max(1, sent - sent_at_warm)
        processes = {}
        for name, samples in rss.items():
            warm = [value for at, value in samples if at >= options.cost_warmup_s] or [samples[-1][1]]
            processes[name] = {
                "peak_mib": max(value for _, value in samples) / 2**20,
                "after_warmup_mib": warm[0] / 2**20,
                "end_mib": warm[-1] / 2**20,
                "growth_mib": (max(warm) - warm[0]) / 2**20,
                "cpu_ms_per_frame": (cpu_end[name] - cpu_at_warm.get(name, cpu_end[name])) * 1000 / frames,
            }
        return {"seconds": options.cost_s, "warmup_s": options.cost_warmup_s, "rate": RATE,
                "size": f"{WIDTH}x{HEIGHT}", "sent": sent,
                "processed": client.xlen(system.results) - results_before, "processes": processes}
    finally:
        system.stop(client)

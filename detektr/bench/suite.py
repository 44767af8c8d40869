"""`detektr bench`: measures detektr's whole path against its baselines, side by side in one run."""

from __future__ import annotations

import gc
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from .. import keys
from ..embedded import start_embedded_server
from ..inject import render_jpegs
from ..producer import FrameProducer
from .baselines import decode_ceiling
from .cost import measure_cost
from .systems import System, bind_url, detektr_system, minimal_system, plain_celery_system, wait_for

CAPABILITIES = ["sample_processing"]
BY_REFERENCE = "detektr-by-reference"
"""detektr's backlog drained once more with frames stored by reference (`FrameProducer(by_reference=True)`)."""


@dataclass
class SuiteOptions:
    """Sizes of one run; `smoke()` is the tiny one CI runs."""

    repetitions: int = 3
    backlog: int = 6000
    rates: tuple[float, ...] = (30.0, 100.0, 300.0)
    rate_s: float = 10.0
    cameras: int = 4
    width: int = 640
    height: int = 480
    concurrency: int = 2
    cost_s: float = 60.0
    cost_warmup_s: float = 10.0
    detectors: bool = True
    smoke: bool = False

    @classmethod
    def smoke_run(cls) -> SuiteOptions:
        return cls(repetitions=1, backlog=40, rates=(30.0,), rate_s=1.0, cost_s=3.0, cost_warmup_s=1.0,
                   detectors=False, smoke=True)


@dataclass
class Results:
    """Everything one run measured, raw enough for the report to take medians and ratios."""

    options: SuiteOptions
    machine: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    drain: dict[str, list[float]] = field(default_factory=dict)  # system -> frames/s per repetition
    ceiling: list[float] = field(default_factory=list)
    ceiling_at: dict[str, list[float]] = field(default_factory=dict)
    """System -> the decode-only ceiling of each of its backlog drains: the mean of those measured just before and
    just after it."""
    latency: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)  # system -> load -> reps
    routing: dict[str, tuple[float, float]] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    detectors: str = ""
    seconds: float = 0.0


def machine() -> dict[str, str]:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{v:.2f}" for v in __import__("os").getloadavg())
    return {"cpu": model or platform.processor(), "cores": str(__import__("os").cpu_count()),
            "system": platform.platform(), "python": platform.python_version(), "load average at start": load}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "n": len(values)}


class Runner:
    """Starts each system, offers it frames, reads its results."""

    def __init__(self, options: SuiteOptions, client: redis.Redis, url: str, log_dir: Path) -> None:
        self.options = options
        self.client = client
        self.url = url
        self.log_dir = log_dir
        self.jpegs = render_jpegs(options.cameras, options.width, options.height, 80, 30)
        self.names = sorted(self.jpegs)
        self.sent = 0

    def producer(self, system: System, by_reference: bool = False) -> FrameProducer:
        return FrameProducer(self.client, system.stream, maxlen=max(10_000, self.options.backlog * 2),
                             frame_ttl_s=300, by_reference=by_reference)

    def frames(self, count: int) -> list[tuple[str, bytes, dict[str, Any]]]:
        batch = []
        for _ in range(count):
            camera = self.names[self.sent % len(self.names)]
            data = self.jpegs[camera][(self.sent // len(self.names)) % 30]
            batch.append((camera, data, {"capabilities": CAPABILITIES}))
            self.sent += 1
        return batch

    def results_count(self, system: System) -> int:
        return int(self.client.xlen(system.results))

    def start(self, system: System) -> None:
        bind_url(system, self.url)
        system.start(self.url, self.log_dir)
        producer = self.producer(system)
        deadline = time.monotonic() + 90
        while self.results_count(system) == 0:  # probe frames until one comes through: every process is up
            if system.dead() or time.monotonic() > deadline:
                raise RuntimeError(f"{system.label} did not come up (dead: {system.dead()}); logs in {self.log_dir}")
            producer.add_many(self.frames(1))
            time.sleep(0.5)
        time.sleep(1.0)
        self.client.delete(system.results)

    def drain(self, system: System, by_reference: bool = False) -> float:
        """Frames/s through the whole system for a backlog written while its reader was stopped: from
        resuming the reader to the time the server appended the last result (its entry id)."""
        self.client.delete(system.results)
        system.pause()
        producer = self.producer(system, by_reference)
        for start in range(0, self.options.backlog, 64):
            producer.add_many(self.frames(min(64, self.options.backlog - start)))
        started = time.time()
        system.resume()
        wait_for(lambda: self.results_count(system) >= self.options.backlog, 600, f"{system.name} backlog")
        (last_id, _), = self.client.xrevrange(system.results, count=1)
        if by_reference:  # the producer's keys outlive their frames (their TTL): not to be counted later
            stored = list(self.client.scan_iter(match=keys.frame_bytes("*"), count=1000))
            for start in range(0, len(stored), 1000):
                self.client.delete(*stored[start : start + 1000])
        return self.options.backlog / (int(last_id.split(b"-")[0]) / 1000 - started)

    def offer(self, system: System, rate: float) -> dict[str, float]:
        """Latency percentiles (ms, from the frame's timestamp to its result) at `rate` frames/s in all."""
        last = self.client.xrevrange(system.results, count=1)
        after = last[0][0].decode() if last else "0-0"
        producer = self.producer(system)
        sent, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < self.options.rate_s:
            due = int(elapsed * rate) + 1 - sent
            if due > 0:
                producer.add_many(self.frames(due))
                sent += due
            else:
                time.sleep(min(0.002, 1.0 / rate))
        deadline = time.monotonic() + max(30.0, self.options.rate_s * 3)
        while self.client.xlen(system.results) and len(self._latencies(system, after)) < sent:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        values = self._latencies(system, after)
        return {**percentiles(values), "offered": rate, "sent": sent}

    def _latencies(self, system: System, after: str) -> list[float]:
        entries = self.client.xrange(system.results, min=f"({after}")
        return [float(fields[b"latency_ms"]) for _, fields in entries]


def routing_decisions(processors: int = 50, cameras: int = 16, calls: int = 20_000) -> dict[str, tuple[float, float]]:
    """p50 and p99 of one routing decision, µs, per strategy (the router's code, no I/O)."""
    from ..router import Router, RoutingTable

    procs = [(f"proc{i:02d}", ["cap"], 1 + i % 4, None) for i in range(processors)]
    names = [f"cam{i:03d}" for i in range(cameras)]
    out = {}
    for strategy in ("least_loaded", "round_robin", "affinity"):
        table = RoutingTable.build(procs, {f"proc{i:02d}": i % 7 for i in range(processors)}, strategy)
        router, samples = Router(), []
        gc.disable()
        for i in range(calls):
            started = time.perf_counter_ns()
            router.route(table, names[i % cameras], ("cap",))
            samples.append(time.perf_counter_ns() - started)
        gc.enable()
        samples.sort()
        out[strategy] = (samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000)
    return out


def detector_overhead(repo: Path) -> str:
    """The existing plain-loop-against-pipeline bench for `motion`, when run from a clone (bench/ is there)."""
    script = repo / "bench" / "bench_detectors_pipeline.py"
    if not script.exists():
        return "not run: bench/bench_detectors_pipeline.py is only in a clone of the repository"
    out = subprocess.run([sys.executable, str(script), "--only", "motion", "--runs", "3"], capture_output=True,
                         text=True, cwd=repo, timeout=900)
    return (out.stdout + out.stderr).strip()


def run_suite(options: SuiteOptions, say=print, repo: Path | None = None) -> Results:
    """Run every measurement; each comparison alternates the systems within each repetition."""
    started = time.monotonic()
    results = Results(options, machine())
    server = start_embedded_server()
    url = server.connection_url + "/0"
    client = redis.Redis.from_url(url)
    log_dir = Path(tempfile.mkdtemp(prefix="detektr-bench-"))
    say(f"embedded Valkey at {url}; logs in {log_dir}")
    try:
        runner = Runner(options, client, url, log_dir)
        all_jpegs = [data for frames in runner.jpegs.values() for data in frames]
        makers = [lambda: detektr_system(options.concurrency, options.backlog),
                  lambda: plain_celery_system(options.concurrency), lambda: minimal_system(options.concurrency)]
        ceiling_jpegs = all_jpegs * max(1, options.backlog // len(all_jpegs))
        for rep in range(options.repetitions):
            order = makers[rep % 3:] + makers[:rep % 3]
            say(f"repetition {rep + 1}")
            for make in order:
                system = make()
                results.labels[system.name] = system.label
                runner.start(system)
                try:
                    drains = [(system.name, False)]
                    if system.name == "detektr":  # also frames stored by reference, as `detektr capture` stores them
                        drains.append((BY_REFERENCE, True))
                        results.labels[BY_REFERENCE] = f"{system.label}, frames stored by reference"
                    before = decode_ceiling(ceiling_jpegs, options.concurrency)  # around each drain: machines drift
                    results.ceiling.append(before)
                    for name, by_reference in drains:
                        rate = runner.drain(system, by_reference)
                        after = decode_ceiling(ceiling_jpegs, options.concurrency)
                        results.ceiling.append(after)
                        ceiling = (before + after) / 2
                        results.ceiling_at.setdefault(name, []).append(ceiling)
                        results.drain.setdefault(name, []).append(rate)
                        say(f"  {name}: backlog {rate:.0f} frames/s, {rate / ceiling:.2f} of the decode-only "
                            f"ceiling ({before:.0f} frames/s just before, {after:.0f} just after)")
                        before = after
                    rate = results.drain[system.name][-1]
                    loads = [(f"{r:g}", r) for r in options.rates] + [("saturation", 0.9 * rate)]
                    for key, offered in loads:
                        point = runner.offer(system, offered)
                        results.latency.setdefault(system.name, {}).setdefault(key, []).append(point)
                        say(f"  {system.name} at {offered:.0f} frames/s: p50 {point['p50']:.1f} "
                            f"p99 {point['p99']:.1f} ms ({point['n']}/{point['sent']})")
                finally:
                    system.stop(client)
                    client.flushdb()  # the next system starts on an empty server, as this one did
        results.routing = routing_decisions()
        say("measuring cost: detektr at 100 frames/s of 1280x720 from 4 cameras")
        results.cost = measure_cost(options, client, url, log_dir)
        if options.detectors and repo is not None:
            say("detector overhead: bench/bench_detectors_pipeline.py --only motion")
            results.detectors = detector_overhead(repo)
        elif not options.detectors:
            results.detectors = "not run in the smoke version"
    finally:
        client.close()
        server.stop()
    results.seconds = time.monotonic() - started
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")

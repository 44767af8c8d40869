"""The systems `detektr bench` compares, each started as real processes on one Valkey server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .. import keys

PY = sys.executable


@dataclass
class System:
    """One compared system: its processes, where frames go in and where results come out."""

    name: str
    label: str
    stream: str
    results: str
    commands: dict[str, list[str]]
    paused_while_writing: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, url: str, log_dir: Path) -> None:
        env = dict(os.environ, REDIS_URL=url, PYTHONUNBUFFERED="1", **self.env)
        for name, command in self.commands.items():
            log = open(log_dir / f"{self.name}-{name}.log", "ab")
            self.procs[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def signal(self, sig: int) -> None:
        for name in self.paused_while_writing:
            self.procs[name].send_signal(sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, client: redis.Redis) -> None:
        self.resume()
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        client.delete(self.stream, self.results)

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]


def detektr_system(concurrency: int, backlog: int) -> System:
    """detektr's whole path: `detektr ingest` and `celery -A detektr worker -Q sample -c N`."""
    return System(
        "detektr", f"detektr (ingest + sample -c {concurrency})", keys.DEFAULT_INPUT_STREAM, "sample:results",
        {"worker": [PY, "-m", "celery", "-A", "detektr", "worker", "-Q", "sample", "-c", str(concurrency),
                    "-n", "sample@%h", "--loglevel", "WARNING"],
         "ingest": [PY, "-m", "detektr", "--log-level", "WARNING", "ingest"]},
        ("ingest",),
        {"DETEKTR_INPUT_MAXLEN": str(max(10_000, backlog * 2)), "DETEKTR_WORKER__HEARTBEAT_INTERVAL_S": "0.5",
         "DETEKTR_FRAMES__MAX_AGE_MS": "0"})


def plain_celery_system(concurrency: int) -> System:
    """Baseline: a hand-written Celery app, one task per frame (detektr.bench.baselines)."""
    module = "detektr.bench.baselines"
    stream, results = "bench:plain:frames", "bench:plain:results"
    return System(
        "plain", f"plain Celery app (-c {concurrency})", stream, results,
        {"worker": [PY, "-m", "celery", "-A", module, "worker", "-Q", "bench_plain", "-c", str(concurrency),
                    "-n", "plain@%h", "--loglevel", "WARNING"],
         "feeder": [PY, "-m", module, "feed", "{url}", stream, results]},
        ("feeder",))


def minimal_system(processes: int) -> System:
    """Baseline: the least a Streams consumer can do (XREADGROUP, decode, statistics, XADD + XACK)."""
    module = "detektr.bench.baselines"
    stream, results = "bench:minimal:frames", "bench:minimal:results"
    commands = {f"consumer{i}": [PY, "-m", module, "consume", "{url}", stream, results] for i in range(processes)}
    return System("minimal", f"minimal Streams consumer ({processes} processes)", stream, results, commands,
                  tuple(commands))


def bind_url(system: System, url: str) -> None:
    """Put the server's address into the commands that take it as an argument."""
    for name, command in system.commands.items():
        system.commands[name] = [url if part == "{url}" else part for part in command]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)

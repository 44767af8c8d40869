"""A process's own `/metrics` (workers, ingest) on `DETEKTR_METRICS__PORT`, and multiprocess mode for workers.

Celery's prefork children each measure their own frames. prometheus_client's multiprocess mode
has every process write its figures to files in one directory, which the main process reads on
each scrape (`MultiProcessCollector`), so one scrape of a worker sees every child, including
children that have exited since (their counts are kept). The worker's main process sets
`PROMETHEUS_MULTIPROC_DIR` before its pool starts, so the children inherit it before they first
import prometheus_client: a fresh temporary directory of its own (deleted when the worker exits),
or the directory the user named (emptied of old files at start: give each worker its own).
Ingest is one process and serves its figures directly.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from .config import MetricsSettings
from .metrics import histogram, process_registry

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The variable prometheus_client reads when it is imported: where each process writes its figures."""


def use_multiprocess_dir(environ: Any = os.environ) -> tuple[str, bool]:
    """Point prometheus_client at a directory for this worker's processes; return (path, whether it was made).

    A directory the user named is emptied of old figures (a previous run's would be added in).
    """
    path = environ.get(MULTIPROC_ENV) or environ.get(MULTIPROC_ENV.lower())
    created = not path
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="detektr-metrics-")
    environ[MULTIPROC_ENV] = path
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # another library imported prometheus_client already: switch it to the files now
        values.ValueClass = values.get_value_class()
    return path, created


def exposition_registry() -> Any:
    """What `/metrics` shows: every process's files in multiprocess mode, else this process's own metrics."""
    if not os.environ.get(MULTIPROC_ENV):
        return process_registry()
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def serve_metrics(settings: MetricsSettings, shown: tuple[str, ...] = ()) -> Any:
    """Serve `/metrics` on a daemon thread (`shown`: metrics made now, to show before they measure anything).

    OSError when the port cannot be had.
    """
    from prometheus_client import start_http_server

    for name in shown:
        histogram(name)

    server, _ = start_http_server(settings.port, settings.host, registry=exposition_registry())
    log.info("serving /metrics on %s:%d", settings.host, settings.port)
    return server


def port_problem(settings: MetricsSettings, exc: OSError) -> str:
    """One line saying why /metrics cannot be served, and what to do."""
    return (f"cannot serve /metrics on {settings.host}:{settings.port} ({exc.strerror or exc}); give each process "
            "on this machine a DETEKTR_METRICS__PORT of its own, or 0 for none")


def start_worker_metrics(settings: MetricsSettings) -> Any:
    """In a worker's main process, before its pool starts: multiprocess mode, then `/metrics`."""
    path, created = use_multiprocess_dir()
    if created:
        main_pid = os.getpid()
        atexit.register(lambda: os.getpid() == main_pid and shutil.rmtree(path, ignore_errors=True))
    return serve_metrics(settings)


def mark_process_dead(pid: int) -> None:
    """A worker process exited: prometheus_client's bookkeeping (its live gauges go; its counts stay)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def connect_worker_metrics() -> None:
    """Do the bookkeeping of each worker process that exits (Celery's worker_process_shutdown, in the child)."""
    from celery.signals import worker_process_shutdown

    def on_process_shutdown(pid: int | None = None, **_: Any) -> None:
        mark_process_dead(pid or os.getpid())

    worker_process_shutdown.connect(on_process_shutdown, weak=False)

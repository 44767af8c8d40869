"""Per-process state of a worker: settings, its Redis connection, processors' setup results.

Created after the fork (Celery's worker_process_init) or lazily on the first task, never at
import, so that models and connections are never shared across forked processes.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import redis

from .config import Settings, load_processor_settings, load_settings
from .fetching import Overlap
from .memory import keep_freed_memory
from .outcomes import FrameOutcomes
from .processor import ProcessorSpec
from .results import ResultPublisher

log = logging.getLogger(__name__)


class WorkerRuntime:
    """What one worker process holds: its Redis client, the result publisher and outcomes, processor states."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.publisher = ResultPublisher(
            client,
            stream_maxlen=settings.results.stream_maxlen,
            dedupe_ttl_s=settings.results.dedupe_ttl_s,
        )
        self.outcomes = FrameOutcomes(
            client, stream_maxlen=settings.results.stream_maxlen, dedupe_ttl_s=settings.results.dedupe_ttl_s
        )
        self._states: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._overlaps: dict[str, Overlap] = {}

    def overlap(self, processor: str) -> Overlap:
        """What decoding ahead buys this processor in this process (`detektr.fetching.Overlap`)."""
        return self._overlaps.setdefault(processor, Overlap())

    def state_for(self, spec: ProcessorSpec) -> Any:
        """Set the processor up once in this process and return its state (None when it takes none).

        The state is what its `setup` returns (called with its validated settings, when it declares
        settings), or its settings alone when it has no setup.
        """
        if not spec.stateful:
            return None
        if spec.name not in self._states:
            with self._lock:
                if spec.name not in self._states:
                    log.info("setting up processor %s in process %d", spec.name, os.getpid())
                    self._states[spec.name] = set_up(spec)
        return self._states[spec.name]


def set_up(spec: ProcessorSpec) -> Any:
    """A processor's state: its settings read and validated (ConfigError naming the variables), then its setup run."""
    settings = load_processor_settings(spec.settings) if spec.settings is not None else None
    if spec.setup is None:
        return settings
    return spec.setup() if settings is None else spec.setup(settings)


_runtime: WorkerRuntime | None = None
_runtime_pid: int | None = None


def current_runtime() -> WorkerRuntime:
    """This process's runtime, created on first use after a fork."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        settings = load_settings()
        keep_freed_memory(settings.worker.keep_freed_mb)
        if settings.worker.opencv_threads:
            import cv2

            cv2.setNumThreads(settings.worker.opencv_threads)
        _runtime = WorkerRuntime(settings, redis.Redis.from_url(settings.redis_url))
        _runtime_pid = os.getpid()
    return _runtime

"""Wiring into Celery's worker: the heartbeat bootstep and per-process processor setup.

All cross-cutting worker behaviour is connected here, in one place, through Celery's
bootsteps and signals; processors themselves stay plain functions.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import bootsteps
from celery.signals import worker_process_init

from .celery_app import app
from .config import load_settings
from .heartbeat import WorkerHeartbeat, heartbeat_payload
from .processor import declared_processors
from .runtime import current_runtime

log = logging.getLogger(__name__)


def consumed_queues(celery_app: Any) -> set[str]:
    """The queues this worker consumes (its -Q option)."""
    return set(celery_app.amqp.queues.consume_from or celery_app.amqp.queues)


class HeartbeatStep(bootsteps.StartStopStep):
    """Publishes this worker's heartbeat on the worker's timer, and withdraws it on shutdown."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.heartbeat: WorkerHeartbeat | None = None
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        settings = load_settings()
        client = redis.Redis.from_url(settings.redis_url)
        queues = consumed_queues(worker.app)
        specs = declared_processors().values()
        served = sorted(spec.name for spec in specs if spec.queue in queues)
        if not served:
            log.warning("worker %s consumes %s but no declared processor uses those queues",
                        worker.hostname, sorted(queues))
        payload = heartbeat_payload(worker.hostname, queues, worker.concurrency, specs, time.time())
        self.heartbeat = WorkerHeartbeat(client, payload, settings.worker.heartbeat_ttl_s)
        self._beat()
        self.tref = worker.timer.call_repeatedly(settings.worker.heartbeat_interval_s, self._beat)
        log.info("worker %s serves processors %s with concurrency %d", worker.hostname, served, worker.concurrency)

    def _beat(self) -> None:
        try:
            self.heartbeat.beat()
        except redis.RedisError as exc:  # keep working; the heartbeat is retried on the next tick
            log.warning("heartbeat failed: %s", exc)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
        if self.heartbeat is not None:
            try:
                self.heartbeat.clear()
            except redis.RedisError:
                pass

    shutdown = stop


app.steps["worker"].add(HeartbeatStep)


@worker_process_init.connect
def _set_up_processors(**_: Any) -> None:
    """After the fork: open this process's connection and run the setup of the processors it serves."""
    runtime = current_runtime()
    queues = consumed_queues(app)
    for spec in declared_processors().values():
        if spec.queue in queues and spec.setup is not None:
            try:
                runtime.state_for(spec)
            except Exception:  # the first task tries again, then retries and dead-letters with the reason
                log.exception("setup of processor %s failed", spec.name)

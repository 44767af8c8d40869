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
from celery.signals import celeryd_after_setup, worker_process_init

from . import keys
from .celery_app import app
from .config import load_settings
from .heartbeat import WorkerHeartbeat, heartbeat_payload
from .processor import ProcessorSpec, declared_processors
from .runtime import current_runtime

log = logging.getLogger(__name__)


def consumed_queues(celery_app: Any) -> set[str]:
    """The queues this worker consumes (its -Q option, plus its own queues for affinity processors)."""
    return set(celery_app.amqp.queues.consume_from or celery_app.amqp.queues)


def served_processors(queues: set[str]) -> list[ProcessorSpec]:
    """The declared processors whose queue is among `queues` and whose required settings are set here."""
    return [spec for spec in declared_processors().values() if spec.queue in queues and not spec.missing_env()]


def _raise_prefetch_for_batches(instance: Any) -> None:
    """A worker serving a batched processor must be able to hold two whole batches unacknowledged.

    With late acks and a prefetch of one, a batch could never fill; celery-batches asks for a
    prefetch of at least the batch size, and a second batch's worth lets the next batch arrive
    while one runs. The consumer exists by now but has not started, so its initial prefetch count
    can still be raised.
    """
    batch = max((spec.batch_size or 0 for spec in served_processors(consumed_queues(instance.app))), default=0)
    prefetch = 2 * batch
    if prefetch <= 1 or instance.prefetch_multiplier >= prefetch:
        return
    instance.prefetch_multiplier = prefetch
    consumer = getattr(instance, "consumer", None)
    if consumer is not None:
        consumer.prefetch_multiplier = prefetch
        consumer.initial_prefetch_count = max(instance.concurrency, 1) * prefetch
    log.info("worker %s serves a batched processor: prefetch multiplier raised to %d", instance.hostname, prefetch)


def _leave_queues_it_cannot_serve(sender: str, instance: Any) -> None:
    """Stop consuming the queue of a processor whose required settings are missing here.

    Its frames then go to workers that can run it (or, with none live, to the dead letters at
    routing, with the reason) instead of failing here one by one. A worker left with nothing to
    consume exits with the reason.
    """
    queues = consumed_queues(instance.app)
    unable = {spec: missing for spec in declared_processors().values()
              if spec.queue in queues and (missing := spec.missing_env())}
    for spec, missing in unable.items():
        log.error("worker %s does not serve processor %s: %s not set", sender, spec.name, ", ".join(missing))
    left = {spec.queue for spec in unable} - {spec.queue for spec in served_processors(queues)}
    if left and not queues - left:
        raise SystemExit(f"worker {sender} has nothing to serve: the processors of {', '.join(sorted(left))} "
                         "lack a required setting (see above)")
    instance.app.amqp.queues.deselect(sorted(left))


@celeryd_after_setup.connect
def _adjust_queues(sender: str, instance: Any, **_: Any) -> None:
    """Leave the queues it cannot serve; consume a queue of its own for each affinity processor."""
    _leave_queues_it_cannot_serve(sender, instance)
    for spec in served_processors(consumed_queues(instance.app)):
        if spec.routing == "affinity":
            instance.app.amqp.queues.select_add(keys.worker_queue(spec.queue, sender))
    _raise_prefetch_for_batches(instance)


def pool_kind(pool: Any) -> str:
    """The worker's pool as `--pool` names it: prefork, threads, solo, ... ("" before it exists)."""
    if pool is None:
        return ""
    kind = type(pool).__module__.rsplit(".", 1)[-1]
    return {"thread": "threads"}.get(kind, kind)


class HeartbeatStep(bootsteps.StartStopStep):
    """Publishes this worker's heartbeat on the consumer's timer, and withdraws it on shutdown.

    A consumer step, like Celery's own heart: when the connection to the server is lost, Celery
    stops the consumer and clears its timer; on reconnecting it starts the consumer again, and
    with it the heartbeat (a server restarted empty learns of the worker at once).
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.heartbeat: WorkerHeartbeat | None = None
        self.tref: Any = None

    def start(self, c: Any) -> None:
        settings = load_settings()
        # Short socket timeouts: a heartbeat must never hold up the consumer while the server is away.
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        queues = consumed_queues(c.app)
        specs = served_processors(queues)
        served = sorted(spec.name for spec in specs)
        if not served:
            log.warning("worker %s consumes %s but no declared processor uses those queues", c.hostname, sorted(queues))
        concurrency = c.controller.concurrency
        pool = pool_kind(c.pool)
        if pool != "prefork":  # no child processes to set up after a fork: set up here, before going live
            _set_up_processors()
        payload = heartbeat_payload(c.hostname, queues, concurrency, specs, time.time(), pool=pool)
        self.heartbeat = WorkerHeartbeat(client, payload, settings.worker.heartbeat_ttl_s)
        self._beat()
        self.tref = c.timer.call_repeatedly(settings.worker.heartbeat_interval_s, self._beat)
        log.info("worker %s serves processors %s with concurrency %d", c.hostname, served, concurrency)

    def _beat(self) -> None:
        try:
            self.heartbeat.beat()
        except redis.RedisError as exc:  # keep working; the heartbeat is retried on the next tick
            log.warning("heartbeat failed: %s", exc)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, c: Any) -> None:
        """The worker is going away: stop beating and withdraw the heartbeat, so routing stops at once."""
        self.stop(c)
        if self.heartbeat is not None:
            try:
                self.heartbeat.clear()
            except redis.RedisError:
                pass


app.steps["consumer"].add(HeartbeatStep)


@worker_process_init.connect
def _set_up_processors(**_: Any) -> None:
    """After the fork: open this process's connection and run the setup of the processors it serves.

    Pools without child processes (threads, solo) run it from the heartbeat step instead, before
    the worker's first heartbeat, so that no frame is routed to it while a model still loads.
    """
    runtime = current_runtime()
    queues = consumed_queues(app)
    for spec in served_processors(queues):
        if spec.setup is not None:
            try:
                runtime.state_for(spec)
            except Exception:  # the first task tries again, then retries and dead-letters with the reason
                log.exception("setup of processor %s failed", spec.name)

"""Wiring into Celery's worker: start-up checks, the heartbeat bootstep, per-process processor setup.

All cross-cutting worker behaviour is connected here, in one place, by `install(app)`, through
Celery's bootsteps and signals; processors themselves stay plain functions. What a worker
serves is decided in `detektr.serving`; here it is acted on.

A worker refuses to start, with one line on stderr and exit code 2, when a processor module does
not import, a setting is invalid, a queue belongs to no processor, nothing it consumes can run
here, or its name is taken by another live worker.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any

import redis
from celery import bootsteps
from celery.signals import (
    celeryd_after_setup,
    celeryd_init,
    import_modules,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from celery.utils.imports import import_from_cwd

from . import keys, tracing
from .config import core_variables, load_processor_settings, load_settings, settings_variables, unknown_variables
from .discovery import processor_modules
from .errors import ConfigError
from .heartbeat import WorkerHeartbeat, heartbeat_payload
from .held import held_tags
from .metrics_server import connect_worker_metrics, port_problem, start_worker_metrics
from .processor import ProcessorSettings, ProcessorSpec, declared_processors
from .runtime import current_runtime
from .serving import ServingPlan, is_default_node_name, name_taken_by, plan_serving, unique_node_name
from .tasks import bind_declared

log = logging.getLogger(__name__)


def refuse(message: str) -> None:
    """Stop the worker before it starts: one line on stderr, exit code 2, no traceback."""
    print(f"detektr worker: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def consumed_queues(celery_app: Any) -> set[str]:
    """The queues this worker consumes (its -Q option, plus its own queues for affinity processors)."""
    return set(celery_app.amqp.queues.consume_from or celery_app.amqp.queues)


def served_processors(queues: set[str]) -> list[ProcessorSpec]:
    """The declared processors whose queue is among `queues` and that can run here."""
    return list(plan_serving(queues, declared_processors().values(), os.environ).serve)


def import_processor_modules(user_modules: list[str]) -> None:
    """Import the shipped processors and the user's (DETEKTR_PROCESSORS); refuse to start when one fails."""
    for module in processor_modules(user_modules):
        try:
            import_from_cwd(module)
        except Exception as exc:  # an import error, or anything a module raises while it loads
            where = " (from DETEKTR_PROCESSORS)" if module in user_modules else ""
            refuse(f"cannot import processor module {module}{where}: {type(exc).__name__}: {exc}; "
                   "run the worker from the directory that holds it, or add that directory to PYTHONPATH")


def all_settings_models() -> list[type[ProcessorSettings]]:
    """Every ProcessorSettings model defined in this process (processors' own and shared ones)."""
    found, todo = [], list(ProcessorSettings.__subclasses__())
    while todo:
        model = todo.pop()
        found.append(model)
        todo += model.__subclasses__()
    return found


def report_unknown_variables() -> None:
    """Log each DETEKTR_* variable that neither detektr nor a loaded processor reads (a typo, most likely)."""
    known = set(core_variables())
    for model in all_settings_models():
        known |= set(settings_variables(model, str(model.model_config.get("env_prefix", "")), "_"))
    for spec in declared_processors().values():
        known |= set(spec.requires_env)
    for line in unknown_variables(os.environ, known):
        log.warning("%s; it is ignored", line)


def _check_name(client: redis.Redis, hostname: str) -> None:
    """Refuse a worker name that another live worker already has (its heartbeats would overwrite ours)."""
    try:
        raw = client.get(keys.worker_heartbeat(hostname))
    except redis.RedisError as exc:  # the server is not up yet: Celery waits for it; nothing to compare with
        log.warning("could not check whether the name %s is taken: %s", hostname, exc)
        return
    heartbeat = json.loads(raw) if raw else None
    other_pid = heartbeat.get("pid") if heartbeat else None
    holder = name_taken_by(heartbeat, socket.gethostname(), os.getpid(), _pid_alive(other_pid))
    if holder:
        refuse(f"the worker name {hostname} is taken by a live worker ({holder}); give each worker a name of "
               "its own with -n (e.g. -n face2@%h), or leave -n out for a unique one")


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _raise_prefetch_for_batches(instance: Any, plan: ServingPlan) -> None:
    """A worker serving a batched processor must be able to hold two whole batches unacknowledged.

    With late acks and a prefetch of one, a batch could never fill; celery-batches asks for a
    prefetch of at least the batch size, and a second batch's worth lets the next batch arrive
    while one runs. The consumer exists by now but has not started, so its initial prefetch count
    can still be raised.
    """
    prefetch = 2 * max((spec.batch_size or 0 for spec in plan.serve), default=0)
    if prefetch <= 1 or instance.prefetch_multiplier >= prefetch:
        return
    instance.prefetch_multiplier = prefetch
    consumer = getattr(instance, "consumer", None)
    if consumer is not None:
        consumer.prefetch_multiplier = prefetch
        consumer.initial_prefetch_count = max(instance.concurrency, 1) * prefetch
    log.info("worker %s serves a batched processor: prefetch multiplier raised to %d", instance.hostname, prefetch)


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
    with it the heartbeat (a server restarted empty learns of the worker at once). Each beat also
    vouches for the messages the worker holds (delivered, not yet acknowledged), so that beat
    gives back only what a lost worker held (`detektr.held`).
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.heartbeat: WorkerHeartbeat | None = None
        self.tref: Any = None
        self.consumer: Any = None
        self.held_unknown = False

    def start(self, c: Any) -> None:
        settings = load_settings()
        # Short socket timeouts: a heartbeat must never hold up the consumer while the server is away.
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        queues = consumed_queues(c.app)
        specs = served_processors(queues)
        concurrency = c.controller.concurrency
        pool = pool_kind(c.pool)
        if pool != "prefork":  # no child processes to set up after a fork: set up here, before going live
            tracing.start_worker_process()  # when the OTEL_* variables ask for it
            set_up_processors(c.app)
        payload = heartbeat_payload(c.hostname, queues, concurrency, specs, time.time(), pool=pool)
        self.heartbeat = WorkerHeartbeat(client, payload, settings.worker.heartbeat_ttl_s)
        self.consumer = c
        self._beat()
        self.tref = c.timer.call_repeatedly(settings.worker.heartbeat_interval_s, self._beat)
        log.info("worker %s serves processors %s with concurrency %d", c.hostname,
                 sorted(spec.name for spec in specs), concurrency)

    def _beat(self) -> None:
        try:
            self.heartbeat.beat(self._held())
        except redis.RedisError as exc:  # keep working; the heartbeat is retried on the next tick
            log.warning("heartbeat failed: %s", exc)

    def _held(self) -> list[str]:
        """The delivery tags this worker holds: those its task consumer's channel delivered and has not acked.

        Read from kombu's virtual QoS (`_delivered`, `_dirty`: private attributes, on the thread that
        consumes, as kombu requires). Without them nothing is vouched for, and beat gives this
        worker's messages back after DETEKTR_WORKER__HELD_STALE_S: run twice, published once.
        """
        channel = getattr(getattr(self.consumer, "task_consumer", None), "channel", None)
        qos = getattr(channel, "qos", None)
        delivered = getattr(qos, "_delivered", None)
        if delivered is None:
            if channel is not None and not self.held_unknown:
                self.held_unknown = True
                log.error("cannot read the messages this worker holds from kombu (%s); beat will give them back "
                          "to their queues after DETEKTR_WORKER__HELD_STALE_S", type(qos).__name__)
            return []
        return held_tags(delivered, getattr(qos, "_dirty", ()))

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


def set_up_processors(celery_app: Any) -> None:
    """Open this process's connection and run the setup of the processors it serves.

    Prefork children run it after the fork (worker_process_init); pools without child processes
    (threads, solo) from the heartbeat step, before the worker's first heartbeat, so that no frame
    is routed to it while a model still loads.
    """
    runtime = current_runtime()
    for spec in served_processors(consumed_queues(celery_app)):
        if spec.stateful:
            try:
                runtime.state_for(spec)
            except Exception:  # the first task tries again, then retries and dead-letters with the reason
                log.exception("setup of processor %s failed", spec.name)


def install(celery_app: Any) -> None:
    """Connect detektr's worker behaviour to `celery_app` (called once, when the app is built)."""
    plans: dict[str, ServingPlan] = {}

    def on_import_modules(sender: Any = None, **_: Any) -> None:
        """Before Celery imports its modules (worker and beat): import the processors, bind their tasks."""
        if sender is not celery_app:
            return
        try:
            settings = load_settings()
        except ConfigError as exc:
            refuse(f"invalid configuration: {exc}")
        import_processor_modules(settings.processors)
        bind_declared(celery_app)

    def on_worker_init(sender: str, instance: Any, options: dict[str, Any], **_: Any) -> None:
        """Before the worker starts: check settings and queues, pick a unique name; refuse what cannot work."""
        if instance.app is not celery_app:
            return
        settings = load_settings()
        queues = _as_list(options.get("queues")) or [celery_app.conf.task_default_queue]
        plan = plan_serving(queues, declared_processors().values(), os.environ)
        if problem := plan.problem():
            refuse(problem)
        for name, why in plan.refused.items():
            log.error("worker %s does not serve processor %s: it %s", sender, name, why)
        for spec in plan.serve:
            if spec.settings is not None:
                try:
                    load_processor_settings(spec.settings)
                except ConfigError as exc:
                    refuse(f"processor {spec.name}: invalid settings: {exc}")
        report_unknown_variables()
        if settings.metrics.port:  # before the pool starts: its children inherit the multiprocess directory
            try:
                start_worker_metrics(settings.metrics)
            except OSError as exc:
                refuse(port_problem(settings.metrics, exc))
        try:
            tracing.check_environment()
        except ConfigError as exc:
            refuse(f"invalid tracing configuration: {exc}")
        if is_default_node_name(sender):
            instance.hostname = unique_node_name(queues, os.getpid())
            log.info("worker name %s (give one with -n)", instance.hostname)
        else:
            client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
            try:
                _check_name(client, instance.hostname)
            finally:
                client.close()
        plans[instance.hostname] = plan

    def on_after_setup(sender: str, instance: Any, **_: Any) -> None:
        """Leave the queues it cannot serve; consume a queue of its own for each affinity processor."""
        plan = plans.get(sender)
        if instance.app is not celery_app or plan is None:
            return
        if plan.queues_to_leave:
            instance.app.amqp.queues.deselect(plan.queues_to_leave)
        for spec in plan.serve:
            if spec.routing == "affinity":
                instance.app.amqp.queues.select_add(keys.worker_queue(spec.queue, sender))
        _raise_prefetch_for_batches(instance, plan)

    def on_process_init(**_: Any) -> None:
        tracing.start_worker_process()  # after the fork: the span processor exports from a thread
        set_up_processors(celery_app)

    def on_process_shutdown(**_: Any) -> None:
        """A pool process (or a threads or solo worker) ends, recycled too: export the spans it still holds."""
        tracing.shutdown()

    # weak=False: the receivers are closures that nothing else keeps alive.
    import_modules.connect(on_import_modules, weak=False)
    celeryd_init.connect(on_worker_init, weak=False)
    celeryd_after_setup.connect(on_after_setup, weak=False)
    worker_process_init.connect(on_process_init, weak=False)
    connect_worker_metrics()
    worker_process_shutdown.connect(on_process_shutdown, weak=False)
    worker_shutdown.connect(on_process_shutdown, weak=False)
    celery_app.steps["consumer"].add(HeartbeatStep)


def _as_list(queues: Any) -> list[str]:
    if not queues:
        return []
    if isinstance(queues, str):
        return [q.strip() for q in queues.split(",") if q.strip()]
    return [q for q in queues if q]

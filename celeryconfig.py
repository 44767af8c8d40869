"""Celery's settings for detektr, made from detektr's validated `Settings` (docs/configuration.md).

Installed as `detektr.celeryconfig`: a `celeryconfig.py` in your working directory never
replaces it. `detektr.celery_app` builds the app with `celery_config(load_settings())`; there is
no other place where Celery is configured.
"""

from __future__ import annotations

from typing import Any

from detektr.config import Settings
from detektr.keys import KOMBU_UNACKED, KOMBU_UNACKED_INDEX, PRIORITY_STEPS

BEAT_TASKS = "detektr.beat.checks"
"""The module of the periodic check tasks (imported by workers and beat)."""

MAINTENANCE_QUEUE = "maintenance"
"""The small queue the periodic checks run on: `celery -A detektr worker -Q maintenance -c 1`."""


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's configuration for these settings (plain data, no I/O)."""
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # A task whose worker vanished is delivered again after this long: the last resort (beat gives
            # back what a silent worker held after DETEKTR_WORKER__HELD_STALE_S, see detektr.held).
            "visibility_timeout": settings.celery.visibility_timeout_s,
            "queue_order_strategy": "priority",
            "priority_steps": list(PRIORITY_STEPS),
            # kombu's defaults, named here because live workers refresh, and beat restores, what they hold.
            "unacked_key": KOMBU_UNACKED,
            "unacked_index_key": KOMBU_UNACKED_INDEX,
        },
        # JSON only: never pickle.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        # Results go to Redis Streams, not to a Celery result backend.
        "task_ignore_result": True,
        "result_backend": None,
        # At-least-once delivery: acknowledge after the processor ran, requeue a lost worker's task,
        # and let each worker process hold only the message it is working on.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": settings.celery.prefetch_multiplier,
        "task_default_priority": 9,  # = frame priority 0, the least urgent (see detektr.router.celery_priority)
        "task_create_missing_queues": True,
        "worker_send_task_events": settings.celery.task_events,  # for Flower
        "task_send_sent_event": settings.celery.task_events,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # Processor modules are imported by detektr itself when a worker starts (detektr.worker_hooks),
        # so that a module that fails to import is one clear line, not a traceback.
        "imports": [BEAT_TASKS],
        "task_routes": {f"{BEAT_TASKS}.*": {"queue": MAINTENANCE_QUEUE}},
        # Beat keeps its schedule in memory: Celery's default scheduler persists it with shelve, which
        # is pickle, and detektr's checks run every few seconds, so there is nothing worth keeping.
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_schedule": {
            "detektr-check-workers": {
                "task": f"{BEAT_TASKS}.check_workers",
                "schedule": settings.beat.interval_s,
            },
            "detektr-check-processors": {
                "task": f"{BEAT_TASKS}.check_processors",
                "schedule": settings.beat.processors_interval_s,
                "options": {"expires": settings.beat.processors_interval_s * 2},  # a late check is superseded
            },
        },
    }

"""All Celery settings for detektr, read from environment variables.

Celery loads this module (`app.config_from_object("celeryconfig")`). Every value below can be
overridden from the environment; see docs/configuration.md.
"""

import os

from detektr.discovery import processor_modules
from detektr.keys import PRIORITY_STEPS

broker_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
broker_connection_retry_on_startup = True
broker_transport_options = {
    # A task whose worker vanished (killed, machine lost) is delivered again after this long.
    "visibility_timeout": int(os.environ.get("DETEKTR_VISIBILITY_TIMEOUT_S", "300")),
    "queue_order_strategy": "priority",
    "priority_steps": list(PRIORITY_STEPS),
}

# JSON only: never pickle.
task_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"

# Results go to Redis Streams, not to a Celery result backend.
task_ignore_result = True
result_backend = None

# At-least-once delivery: acknowledge after the processor ran, requeue a lost worker's task,
# and let each worker process hold only the message it is working on.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = int(os.environ.get("DETEKTR_PREFETCH_MULTIPLIER", "1"))
task_default_priority = 9  # = frame priority 0, the least urgent (see detektr.router.celery_priority)
task_create_missing_queues = True

worker_send_task_events = os.environ.get("DETEKTR_TASK_EVENTS", "0") == "1"  # for Flower
task_send_sent_event = worker_send_task_events
worker_hijack_root_logger = False
worker_redirect_stdouts = False

# Processor modules: the `workers` package plus DETEKTR_PROCESSORS.
imports = [*processor_modules(os.environ.get("DETEKTR_PROCESSORS", "")), "beat.checks"]

# Periodic checks run on their own small queue: `celery -A detektr worker -Q maintenance -c 1`.
task_routes = {"beat.checks.*": {"queue": "maintenance"}}

beat_schedule = {
    "detektr-check-workers": {
        "task": "beat.checks.check_workers",
        "schedule": float(os.environ.get("DETEKTR_BEAT_INTERVAL_S", "5")),
    },
}

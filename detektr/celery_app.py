"""The Celery application: `celery -A detektr worker -Q <processor> -c <capacity>`."""

from __future__ import annotations

from celery import Celery

app = Celery("detektr")
app.config_from_object("celeryconfig")

# Worker-side wiring (heartbeat bootstep, per-process setup); connects Celery signals only.
from . import worker_hooks  # noqa: E402,F401  (import for its side effect on `app`)

"""Periodic checks: thin tasks that read state, call a decision, act."""

from __future__ import annotations

import logging

import redis

from detektr.celery_app import app
from detektr.config import load_settings
from detektr.registry import prune_dead_workers

log = logging.getLogger(__name__)


@app.task(name="beat.checks.prune_dead_workers", ignore_result=True)
def prune_dead_workers_task() -> int:
    """Drop workers whose heartbeat stopped from the worker index; return how many."""
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        removed = prune_dead_workers(client, settings.worker.heartbeat_ttl_s)
    finally:
        client.close()
    if removed:
        log.warning("%d worker(s) stopped sending heartbeats and were removed", removed)
    return removed

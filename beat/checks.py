"""Periodic checks: thin tasks that read state, call a decision, act.

Run by `celery -A detektr beat`, executed by a worker on the `maintenance` queue. Installed as
`detektr.beat.checks`.
"""

from __future__ import annotations

import logging

import redis
from celery import shared_task

from detektr.config import load_settings
from detektr.registry import (
    drain_worker_queue,
    live_processors,
    orphaned_worker_queues,
    prune_dead_workers,
    read_heartbeats,
)

log = logging.getLogger(__name__)


def check_workers(client: redis.Redis, heartbeat_ttl_s: float) -> dict[str, int]:
    """Forget workers whose heartbeat stopped, and move tasks off their own queues to shared ones."""
    removed = prune_dead_workers(client, heartbeat_ttl_s)
    live = {beat["hostname"] for beat in read_heartbeats(client, heartbeat_ttl_s)}
    moved = 0
    for own_queue, shared_queue in orphaned_worker_queues(client, live).items():
        count = drain_worker_queue(client, own_queue, shared_queue)
        if count:
            log.warning("moved %d task(s) from dead worker queue %s to %s", count, own_queue, shared_queue)
        moved += count
    if removed:
        log.warning("%d worker(s) stopped sending heartbeats and were removed", removed)
    live_count = len(live_processors(client, heartbeat_ttl_s))
    return {"removed_workers": removed, "moved_tasks": moved, "live_processors": live_count}


@shared_task(name="detektr.beat.checks.check_workers", ignore_result=True)
def check_workers_task() -> dict[str, int]:
    """Beat task: see `check_workers`."""
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return check_workers(client, settings.worker.heartbeat_ttl_s)
    finally:
        client.close()

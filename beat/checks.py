"""Periodic checks: thin tasks that read state, call a decision, act.

Run by `celery -A detektr beat`, executed by a worker on the `maintenance` queue. Installed as
`detektr.beat.checks`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from celery import shared_task

from detektr import keys, stats
from detektr.accounting import processor_books
from detektr.aging import promote_overdue, task_frames
from detektr.backpressure import level, queue_limit
from detektr.breaker import check_breakers
from detektr.config import load_settings
from detektr.deadletter import dead_letter_fields
from detektr.frame import FrameRef
from detektr.held import RESTORE_AT_MOST, stale_before, stale_tags
from detektr.outcomes import FrameOutcomes, ended_with
from detektr.registry import (
    drain_worker_queue,
    live_processors,
    orphaned_worker_queues,
    prune_dead_workers,
    read_heartbeats,
    write_levels,
)

log = logging.getLogger(__name__)


def check_workers(client: redis.Redis, heartbeat_ttl_s: float, held_stale_s: float | None = None,
                  app: Any = None) -> dict[str, int]:
    """Forget workers whose heartbeat stopped, move tasks off their own queues to shared ones, and give
    back to their queues the messages no live worker has vouched for in `held_stale_s` (with `app`).
    """
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
    restored = 0
    if held_stale_s is not None and app is not None:
        restored = restore_stale_held(client, app, held_stale_s)
    live_count = len(live_processors(client, heartbeat_ttl_s))
    return {"removed_workers": removed, "moved_tasks": moved, "restored_messages": restored,
            "live_processors": live_count}


def restore_stale_held(client: redis.Redis, app: Any, stale_s: float, now: float | None = None) -> int:
    """Give back to its queue (next in line) each held message no live worker vouched for in `stale_s`.

    kombu's own restore (`QoS.restore_by_tag`, one transaction per message, watching the hash):
    a message acknowledged meanwhile is left alone. Returns how many were given back.
    """
    now = time.time() if now is None else now
    index = client.zrangebyscore(keys.KOMBU_UNACKED_INDEX, "-inf", f"({stale_before(now, stale_s)}",
                                 start=0, num=RESTORE_AT_MOST, withscores=True)
    tags = stale_tags(index, now, stale_s)
    if not tags:
        return 0
    held = client.hmget(keys.KOMBU_UNACKED, tags)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for tag in tags:
            channel.qos.restore_by_tag(tag, client=channel.client)
    restored = sum(message is not None for message in held)
    log.warning("gave back %d message(s) held by workers that stopped vouching for them %.1f s ago or more",
                restored, stale_s)
    return restored


@shared_task(name="detektr.beat.checks.check_workers", ignore_result=True)
def check_workers_task() -> dict[str, int]:
    """Beat task: see `check_workers`."""
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return check_workers(client, settings.worker.heartbeat_ttl_s, settings.worker.held_stale_s,
                             check_workers_task.app)
    finally:
        client.close()


def check_backpressure(client: redis.Redis, settings: Any, live_now: dict[str, Any],
                       counters: dict[str, dict[str, int]], now: float) -> dict[str, str]:
    """Measure each live processor's frames in flight against its limit; keep the levels (detektr.backpressure)."""
    levels = {}
    for name, live in live_now.items():
        # frames owed, held ones too (none before ingest routed it a frame)
        depth = processor_books(counters[name])["in_flight"] if name in counters else 0
        limit = queue_limit(live.capacity, settings.backpressure.limit_per_worker)
        levels[name] = {"level": level(depth, limit), "depth": depth, "limit": limit, "policy": live.overload,
                        "queue": live.queue}
    write_levels(client, levels, now)
    return {name: value["level"] for name, value in levels.items()}


@shared_task(name="detektr.beat.checks.check_processors", ignore_result=True)
def check_processors_task() -> dict[str, str]:
    """Beat task: move every processor's circuit breaker on, measure its backpressure level, age its queued
    tasks, and dead-letter frames stranded without a live worker."""
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        now = time.time()
        client.set(keys.CHECKS_RAN, now, ex=60)  # beat and a maintenance worker are at work (healthcheck beat)
        routed = sorted(name.decode() for name in client.smembers(keys.PROCESSORS_INDEX))
        counters = {name: stats.read_processor(client, name) for name in routed}  # read once, for both checks
        changed = check_breakers(client, counters, settings.breaker, now)
        for name, state in changed.items():
            log.warning("circuit breaker of processor %s is now %s", name, state)
        live = live_processors(client, settings.worker.heartbeat_ttl_s)
        levels = check_backpressure(client, settings, live, counters, now)
        dead_letter_stranded(client, settings, live, now)
        for queue in {p.queue for p in live.values()} | {q for p in live.values() for _, q in p.own_queues}:
            moved = promote_overdue(client, queue, settings.backpressure.aging_s, now)
            if moved:
                log.warning("moved %d task(s) that waited over %.1f s ahead on queue %s", moved,
                            settings.backpressure.aging_s, queue)
        return {**{f"breaker:{name}": state for name, state in changed.items()},
                **{f"level:{name}": value for name, value in levels.items() if value != "normal"}}
    finally:
        client.close()


def dead_letter_stranded(client: redis.Redis, settings: Any, live: dict[str, Any], now: float) -> int:
    """Dead-letter the frames queued for processors with no live worker for `no_worker_s`; return how many.

    The processors check's last entry for a processor says when it was last live, and its queue.
    """
    live_queues = {p.queue for p in live.values()}
    outcomes = FrameOutcomes(client, stream_maxlen=settings.results.stream_maxlen,
                             dedupe_ttl_s=settings.results.dedupe_ttl_s)
    ended = 0
    for raw_name, raw in client.hgetall(keys.BACKPRESSURE).items():
        name, last = raw_name.decode(), json.loads(raw)
        queue = last.get("queue", name)
        if name in live or queue in live_queues or now - last.get("at", now) < settings.worker.no_worker_s:
            continue
        reason = f"no live worker of {name} for {now - last['at']:.0f} s: its queued frames cannot run"
        for source in keys.celery_queue_lists(queue):
            while (message := client.rpop(source)) is not None:
                refs = [ref for frame in task_frames(message) if (ref := _frame_ref(frame)) is not None]
                endings = [ending for ref in refs for ending in ended_with(name, ref, "dead", dead_letter_fields(
                    "process", reason, ref.model_dump(exclude={"then"}, exclude_none=True), frame_id=ref.frame_id,
                    camera_id=ref.camera_id, processor=name))]
                ended += sum(outcomes.end(endings))
    if ended:
        log.warning("dead-lettered %d frame pair(s) queued for processors with no live worker", ended)
    return ended


def _frame_ref(frame: dict[str, Any]) -> FrameRef | None:
    try:
        return FrameRef.model_validate(frame)
    except ValueError:  # not a frame reference: nothing to account for
        return None

"""Which processors are live, with what capacity, and how deep their queues are.

Processors are known from their `@processor` declarations; which of them are live comes from
worker heartbeats (`detektr.heartbeat`), and from the registrations of processors that run
outside this code base (`detektr.external`). A processor's capacity is the sum of the concurrency
of its live workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import keys
from .external import WORKER_PREFIX as EXTERNAL_WORKER_PREFIX
from .external import registered_heartbeats


@dataclass(frozen=True)
class LiveProcessor:
    """A processor with at least one live worker."""

    name: str
    capabilities: tuple[str, ...]
    capacity: int
    queue: str
    result_stream: str
    routing: str | None = None
    workers: tuple[str, ...] = field(default=())
    own_queues: tuple[tuple[str, str], ...] = field(default=())
    """(worker hostname, that worker's own queue) for processors routed with affinity."""
    gated_by: str | None = None
    batch_size: int | None = None
    overload: str = "shed"

    @property
    def external(self) -> bool:
        """Served only by consumers registered through the API (`detektr.external`), not by detektr workers."""
        return bool(self.workers) and all(worker.startswith(EXTERNAL_WORKER_PREFIX) for worker in self.workers)


def read_heartbeats(redis: Any, ttl_s: float, now: float | None = None) -> list[dict[str, Any]]:
    """The heartbeats of workers seen within `ttl_s`."""
    now = time.time() if now is None else now
    hostnames = redis.zrangebyscore(keys.WORKERS_INDEX, now - ttl_s, "+inf")
    if not hostnames:
        return []
    names = [h.decode() if isinstance(h, bytes) else h for h in hostnames]
    beats = []
    for raw in redis.mget([keys.worker_heartbeat(name) for name in names]):
        if raw is None:
            continue
        try:
            beats.append(json.loads(raw))
        except ValueError:
            continue
    return beats


def merge_heartbeats(heartbeats: Iterable[dict[str, Any]]) -> dict[str, LiveProcessor]:
    """Combine heartbeats into live processors: capacity is the sum of their workers' concurrency."""
    merged: dict[str, dict[str, Any]] = {}
    for beat in heartbeats:
        concurrency = int(beat.get("concurrency") or 0)
        for advertised in beat.get("processors", []):
            name = advertised["name"]
            entry = merged.setdefault(name, {"spec": advertised, "capacity": 0, "workers": [], "own": []})
            entry["capacity"] += concurrency
            entry["workers"].append(beat.get("hostname", "?"))
            if advertised.get("own_queue"):
                entry["own"].append((beat.get("hostname", "?"), advertised["own_queue"]))
    live = {}
    for name, entry in merged.items():
        spec = entry["spec"]
        if entry["capacity"] <= 0:
            continue
        live[name] = LiveProcessor(
            name=name,
            capabilities=tuple(spec.get("capabilities") or (name,)),
            capacity=entry["capacity"],
            queue=spec.get("queue") or name,
            result_stream=spec.get("result_stream") or keys.default_result_stream(name),
            routing=spec.get("routing"),
            workers=tuple(sorted(entry["workers"])),
            own_queues=tuple(sorted(entry["own"])),
            gated_by=spec.get("gated_by"),
            batch_size=spec.get("batch_size"),
            overload=spec.get("overload") or "shed",
        )
    return live


def live_processors(redis: Any, ttl_s: float) -> dict[str, LiveProcessor]:
    """Read heartbeats (and the registrations of external processors, `detektr.external`): the live processors."""
    return merge_heartbeats([*read_heartbeats(redis, ttl_s), *registered_heartbeats(redis)])


def wait_for_capabilities(redis: Any, ttl_s: float, capabilities: Iterable[str], timeout_s: float,
                          poll_s: float = 0.2) -> list[str]:
    """Wait until a live processor offers each capability; return those still missing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        offered = {c for live in live_processors(redis, ttl_s).values() for c in live.capabilities}
        missing = [c for c in capabilities if c not in offered]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(poll_s)


def queue_depths(redis: Any, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each Celery queue (all its priority lists), in one round trip."""
    queues = list(queues)
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        for name in keys.celery_queue_lists(queue):
            pipe.llen(name)
    counts = pipe.execute()
    per_queue = len(keys.celery_queue_lists("q"))
    return {queue: sum(counts[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(queues)}


def prune_dead_workers(redis: Any, ttl_s: float, now: float | None = None) -> int:
    """Remove workers whose heartbeat is older than `ttl_s` from the index; return how many."""
    now = time.time() if now is None else now
    return int(redis.zremrangebyscore(keys.WORKERS_INDEX, "-inf", now - ttl_s))


def orphaned_worker_queues(redis: Any, live_hostnames: Iterable[str]) -> dict[str, str]:
    """Own queues of workers that are no longer live: own queue -> the processor's shared queue."""
    live = set(live_hostnames)
    orphaned = {}
    for own, raw in redis.hgetall(keys.WORKER_QUEUES).items():
        info = json.loads(raw)
        if info["hostname"] not in live:
            orphaned[own.decode() if isinstance(own, bytes) else own] = info["queue"]
    return orphaned


def drain_worker_queue(redis: Any, own_queue: str, shared_queue: str) -> int:
    """Move every task waiting on a dead worker's own queue to the shared queue, keeping priorities."""
    moved = 0
    for source, target in zip(keys.celery_queue_lists(own_queue), keys.celery_queue_lists(shared_queue)):
        while redis.lmove(source, target, "RIGHT", "LEFT") is not None:
            moved += 1
    redis.hdel(keys.WORKER_QUEUES, own_queue)
    return moved


def write_levels(redis: Any, levels: dict[str, dict[str, Any]], now: float) -> None:
    """Keep each processor's backpressure level ({level, depth, limit}) for ingest and status, with its time."""
    if levels:
        redis.hset(keys.BACKPRESSURE,
                   mapping={name: json.dumps({**value, "at": now}) for name, value in levels.items()})


def read_levels(redis: Any, max_age_s: float, now: float | None = None) -> dict[str, dict[str, Any]]:
    """The backpressure levels the processors check wrote within `max_age_s` (older ones no longer hold)."""
    now = time.time() if now is None else now
    levels = {}
    for name, raw in redis.hgetall(keys.BACKPRESSURE).items():
        value = json.loads(raw)
        if now - value.get("at", 0) <= max_age_s:
            levels[name.decode()] = value
    return levels

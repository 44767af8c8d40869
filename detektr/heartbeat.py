"""Worker heartbeats: each worker publishes its queues, concurrency and processors to Redis.

The registry (`detektr.registry`) reads them back to know which processors are live and what
capacity each has. A heartbeat is a JSON value with a TTL plus an entry in a sorted set, so a
worker that dies simply stops being live after `heartbeat_ttl_s`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from . import keys
from .processor import ProcessorSpec


def heartbeat_payload(
    hostname: str,
    queues: Iterable[str],
    concurrency: int,
    specs: Iterable[ProcessorSpec],
    started_at: float,
    pool: str = "",
) -> dict[str, Any]:
    """What a worker says about itself: the processors it serves are those whose queue it consumes.

    For a processor routed with affinity, `own_queue` names this worker's own queue for it.
    """
    queues = sorted(set(queues))
    processors = []
    for spec in specs:
        if spec.queue not in queues:
            continue
        advertised = spec.advertised()
        own = keys.worker_queue(spec.queue, hostname)
        if own in queues:
            advertised["own_queue"] = own
        processors.append(advertised)
    return {
        "hostname": hostname,
        "machine": socket.gethostname(),
        "pid": os.getpid(),
        "pool": pool,
        "queues": queues,
        "concurrency": concurrency,
        "processors": processors,
        "started_at": started_at,
        "sent_at": time.time(),
    }


class WorkerHeartbeat:
    """Publishes one worker's heartbeat; `beat()` is called every `heartbeat_interval_s`."""

    def __init__(self, redis: Any, payload: dict[str, Any], ttl_s: float) -> None:
        self._redis = redis
        self._payload = payload
        self._ttl_ms = max(1, int(ttl_s * 1000))

    def beat(self, held: Iterable[str] = ()) -> None:
        """Publish the heartbeat now; vouch, in the same round trip, for the messages this worker holds.

        `held` are the delivery tags of messages delivered to this worker and not yet acknowledged:
        their time in kombu's `unacked_index` becomes now (only where kombu still has them: ZADD XX),
        so that beat does not give them back (`detektr.held`).
        """
        now = time.time()
        self._payload["sent_at"] = now
        hostname = self._payload["hostname"]
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(keys.worker_heartbeat(hostname), json.dumps(self._payload), px=self._ttl_ms)
        pipe.zadd(keys.WORKERS_INDEX, {hostname: now})
        for advertised in self._payload["processors"]:
            if advertised.get("own_queue"):
                pipe.hset(keys.WORKER_QUEUES, advertised["own_queue"],
                          json.dumps({"hostname": hostname, "queue": advertised["queue"]}))
        held = list(held)
        if held:
            pipe.zadd(keys.KOMBU_UNACKED_INDEX, dict.fromkeys(held, now), xx=True)
        pipe.execute()

    def clear(self) -> None:
        """Withdraw the heartbeat (clean shutdown), so routing stops at once."""
        hostname = self._payload["hostname"]
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(keys.worker_heartbeat(hostname))
        pipe.zrem(keys.WORKERS_INDEX, hostname)
        pipe.execute()

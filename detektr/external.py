"""Processors that run outside this code base but consume a detektr queue, registered through the API.

A worker of this code base becomes live by its heartbeats (`detektr.heartbeat`). An external
consumer is live while its registration stands: `POST /api/v1/processors/register` writes a
record (`keys.registered_processor`) with the capacity it offers, and the registry
(`detektr.registry.live_processors`) merges every standing record with the heartbeats, so the
router sends it frames like any other live processor. A registration with `ttl_s` lapses unless
it is posted again within that time (the external consumer's heartbeat); one without stands
until `DELETE /api/v1/processors/{name}`.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import keys

NAME_PATTERN = r"^[a-z][a-z0-9_\-]{0,63}$"
"""A processor's name, as `@processor` accepts it."""

_CAPABILITY = r"^[A-Za-z0-9_.\-]{1,64}$"
_STREAM = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$"
RESERVED_QUEUES = frozenset({"maintenance", "celery"})
"""Queues of detektr's own machinery, never a processor's."""

WORKER_PREFIX = "registered:"
"""The worker name a registered processor shows under (`registered:<name>`): no real worker has a colon there."""


class RegisteredProcessor(BaseModel):
    """What an external processor says about itself when it registers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="The processor's name.")
    capabilities: list[str] = Field(min_length=1, max_length=32, description="What it offers.")
    capacity: int = Field(ge=1, le=10_000, description="Frames it works on at once (like a worker's -c).")
    queue: str | None = Field(None, pattern=NAME_PATTERN, description="The queue it consumes (default: its name).")
    result_stream: str | None = Field(None, pattern=_STREAM,
                                      description="Where it appends results (default: results:<name>).")
    routing: Literal["least_loaded", "round_robin"] | None = Field(None, description="Its routing strategy.")
    overload: Literal["shed", "pause"] = Field("shed", description="What ingest does when its queue backs up.")
    ttl_s: float | None = Field(None, ge=1, le=86_400,
                                description="The registration lapses unless posted again within this time; "
                                "none: it stands until deleted.")

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if not re.match(_CAPABILITY, c)]
        if bad:
            raise ValueError(f"capabilities must be letters, digits, '_', '.' or '-' (1-64 characters): {bad[:3]}")
        return list(dict.fromkeys(value))

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        if value in RESERVED_QUEUES:
            raise ValueError(f"queue {value!r} belongs to detektr itself")
        return value

    @field_validator("result_stream")
    @classmethod
    def _result_stream(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith(keys.PREFIX + ":") or value == keys.DEAD_LETTER_STREAM):
            raise ValueError("result_stream may not be one of detektr's own keys or the dead-letter stream")
        return value

    def advertised(self) -> dict[str, Any]:
        """The record as a worker's heartbeat advertises a processor (what the registry merges)."""
        return {
            "name": self.name,
            "capabilities": list(self.capabilities),
            "capacity": self.capacity,
            "result_stream": self.result_stream or keys.default_result_stream(self.name),
            "routing": self.routing,
            "queue": self.queue or self.name,
            "batch_size": None,
            "gate": False,
            "gated_by": None,
            "overload": self.overload,
            "registered": True,
        }


def as_heartbeat(record: dict[str, Any]) -> dict[str, Any]:
    """A stored registration as the heartbeat of a worker that serves it alone, with its capacity."""
    advertised = record["processor"]
    return {"hostname": WORKER_PREFIX + advertised["name"], "concurrency": advertised["capacity"],
            "processors": [advertised], "registered_at": record.get("registered_at"),
            "expires_at": record.get("expires_at")}


def register(redis: Any, processor: RegisteredProcessor, now: float | None = None) -> dict[str, Any]:
    """Store (or renew) a registration; return the stored record."""
    now = time.time() if now is None else now
    record = {"processor": processor.advertised(), "registered_at": now,
              "expires_at": now + processor.ttl_s if processor.ttl_s else None}
    pipe = redis.pipeline(transaction=True)
    key = keys.registered_processor(processor.name)
    if processor.ttl_s:
        pipe.set(key, json.dumps(record), px=int(processor.ttl_s * 1000))
    else:
        pipe.set(key, json.dumps(record))
    pipe.sadd(keys.REGISTERED_PROCESSORS, processor.name)
    pipe.execute()
    return record


def unregister(redis: Any, name: str) -> bool:
    """Withdraw a registration; False when there was none."""
    pipe = redis.pipeline(transaction=True)
    pipe.delete(keys.registered_processor(name))
    pipe.srem(keys.REGISTERED_PROCESSORS, name)
    deleted, _ = pipe.execute()
    return bool(deleted)


def registered_heartbeats(redis: Any) -> list[dict[str, Any]]:
    """Every standing registration, as a heartbeat (a name whose record lapsed is skipped)."""
    names = sorted(n.decode() if isinstance(n, bytes) else n for n in redis.smembers(keys.REGISTERED_PROCESSORS))
    if not names:
        return []
    beats = []
    for raw in redis.mget([keys.registered_processor(name) for name in names]):
        try:
            beats.append(as_heartbeat(json.loads(raw)))
        except (TypeError, ValueError, KeyError):  # lapsed (None) or not a record
            continue
    return beats

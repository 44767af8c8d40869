"""A circuit breaker per processor: a processor that keeps failing stops receiving frames for a while.

closed -> open: `failure_threshold` attempts failed since its last success (every attempt counts,
retries included). open -> half_open: after `recovery_s`; frames flow again as a trial. half_open
-> closed: `success_threshold` frames processed; half_open -> open: an attempt failed before that.

The decision (`next_breaker`) is plain code. The beat check feeds it each routed processor's counters
(`processed`, `failed`, which workers already write: nothing is added to a worker's hot path) and
keeps the state in Redis, where every ingest replica reads it with its routing table: frames for
an open processor go to another live processor of the capability, or to the dead letters with
the reason, and cost no worker time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import keys
from .config import BreakerSettings

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Breaker:
    """One processor's breaker: its state since when, and the counters it last saw."""

    state: str = CLOSED
    since: float = 0.0
    failed_seen: int = 0
    processed_seen: int = 0
    reason: str = ""


def next_breaker(breaker: Breaker, failed: int, processed: int, now: float, settings: BreakerSettings) -> Breaker:
    """The breaker after seeing the processor's `failed` and `processed` counters at `now`."""
    new_failures = failed - breaker.failed_seen
    new_successes = processed - breaker.processed_seen
    if breaker.state == CLOSED:
        if new_successes > 0 or new_failures < 0 or new_successes < 0:  # a success (or counters reset): count anew
            return replace(breaker, failed_seen=failed, processed_seen=processed)
        if new_failures >= settings.failure_threshold:
            return Breaker(OPEN, now, failed, processed,
                           f"{new_failures} attempts failed without a success")
        return breaker
    if breaker.state == OPEN:
        if now - breaker.since >= settings.recovery_s:
            return Breaker(HALF_OPEN, now, failed, processed, "on trial after " + breaker.reason)
        return breaker
    if new_successes >= settings.success_threshold:
        return Breaker(CLOSED, now, failed, processed)
    if new_failures > 0:
        return Breaker(OPEN, now, failed, processed, f"failed again on trial ({new_failures} attempts)")
    return breaker


def read_breakers(redis: Any, processors: Iterable[str]) -> dict[str, Breaker]:
    """The breakers of `processors` (closed where none was ever written), in one round trip."""
    names = list(processors)
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.breaker(name))
    breakers = {}
    for name, raw in zip(names, pipe.execute()):
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        breakers[name] = Breaker(
            state=fields.get("state", CLOSED), since=float(fields.get("since", 0)),
            failed_seen=int(fields.get("failed_seen", 0)), processed_seen=int(fields.get("processed_seen", 0)),
            reason=fields.get("reason", ""),
        ) if fields else Breaker()
    return breakers


def open_processors(redis: Any, processors: Iterable[str]) -> dict[str, str]:
    """The processors whose breaker is open, with why: what routing leaves out."""
    return {name: b.reason for name, b in read_breakers(redis, processors).items() if b.state == OPEN}


def check_breakers(redis: Any, counters_by_processor: dict[str, dict[str, int]], settings: BreakerSettings,
                   now: float) -> dict[str, str]:
    """Move each processor's breaker on from its counters (`detektr.stats`); return the states that changed."""
    changed = {}
    pipe = redis.pipeline(transaction=False)
    for name, breaker in read_breakers(redis, counters_by_processor).items():
        counters = counters_by_processor[name]
        after = next_breaker(breaker, counters["failed"], counters["processed"], now, settings)
        if after != breaker:
            pipe.hset(keys.breaker(name), mapping={k: str(v) for k, v in asdict(after).items()})
            if after.state != breaker.state:
                changed[name] = after.state
    pipe.execute()
    return changed

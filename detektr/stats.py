"""Every counter detektr keeps, declared once: where it lives, what it counts, who writes it.

Counters are Redis hashes (keys in `detektr.keys`): one for ingest, one per camera, one per
processor. Writers add to them through `count_*` on a pipeline, in the same round trip as the
work they count; `read_*` returns every declared counter of a hash (0 when never written).
The publish script (`detektr.results`) adds `processed` for the camera and the processor in the
same call that appends the result. A name that is not declared here is refused.
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any, Literal

from . import keys

Scope = Literal["ingest", "camera", "processor"]


@dataclass(frozen=True)
class Counter:
    """One counter: its hash, its field name, what one unit is, and which process adds to it."""

    scope: Scope
    name: str
    counts: str
    written_by: str


COUNTERS: tuple[Counter, ...] = (
    Counter("ingest", "read", "input-stream entries read (new and reclaimed)", "ingest"),
    Counter("ingest", "dead", "entries dead-lettered by ingest (invalid, duplicate, no live processor)", "ingest"),
    Counter("ingest", "reclaimed", "entries taken over from a consumer that stopped", "ingest"),
    Counter("ingest", "duplicates", "entries refused because their frame_id was already taken", "ingest"),
    Counter("ingest", "ungated", "frames sent straight to a gated processor because its gate had no live worker",
            "ingest"),
    Counter("camera", "in", "frames accepted from the camera", "ingest"),
    Counter("camera", "routed", "frame/processor pairs routed (a frame for two processors counts two, a gated "
            "processor riding along too)", "ingest"),
    Counter("camera", "processed", "results published", "workers (publish script)"),
    Counter("camera", "dead", "dead letters of the camera's frames", "ingest, workers (outcomes script)"),
    Counter("camera", "gated_out", "frame/processor pairs a closed gate kept back", "workers (outcomes script)"),
    Counter("camera", "expired", "frame/processor pairs past their deadline", "workers (outcomes script)"),
    Counter("camera", "skipped", "frame/processor pairs shed under load", "ingest, workers (outcomes script)"),
    Counter("processor", "routed", "frames routed to it, riding along after a gate included: each ends as "
            "processed, dead, gated_out, expired or skipped", "ingest"),
    Counter("processor", "queued", "frames sent to the processor's queue for their first attempt", "ingest, workers"),
    Counter("processor", "tasks", "Celery tasks sent to it with frames' first attempts (under a backlog a task "
            "carries several frames)", "ingest, workers"),
    Counter("processor", "retries", "frames sent back to it for another attempt", "workers"),
    Counter("processor", "processed", "results published", "workers (publish script)"),
    Counter("processor", "failed", "attempts that raised (each retry counts)", "workers"),
    Counter("processor", "dead", "frames dead-lettered for it", "workers (outcomes script)"),
    Counter("processor", "gated_out", "frames its gate kept from it", "workers (outcomes script)"),
    Counter("processor", "expired", "frames past their deadline before it ran", "workers (outcomes script)"),
    Counter("processor", "skipped", "frames shed for it under load", "ingest, workers (outcomes script)"),
    Counter("processor", "batches", "batches it ran (batched processors)", "workers"),
    Counter("processor", "batched_frames", "frames in those batches", "workers"),
    Counter("processor", "inference_us", "microseconds its function ran, on the frames of inference_frames",
            "workers (publish script)"),
    Counter("processor", "inference_frames", "frames its function returned on", "workers (publish script)"),
)

_NAMES: dict[Scope, tuple[str, ...]] = {
    scope: tuple(c.name for c in COUNTERS if c.scope == scope) for scope in ("ingest", "camera", "processor")
}


def names(scope: Scope) -> tuple[str, ...]:
    """The counters of one scope, in declaration order."""
    return _NAMES[scope]


def checked(scope: Scope, name: str) -> str:
    """`name`, if it is a declared counter of `scope`; ValueError otherwise."""
    if name not in _NAMES[scope]:
        raise ValueError(f"{name!r} is not a declared {scope} counter (see detektr.stats.COUNTERS)")
    return name


def count_ingest(pipe: Any, name: str, amount: int = 1) -> None:
    """Add to an ingest counter (on a pipeline or client)."""
    pipe.hincrby(keys.INGEST_STATS, checked("ingest", name), amount)


def count_camera(pipe: Any, camera_id: str, name: str, amount: int = 1) -> None:
    """Add to one camera's counter."""
    pipe.hincrby(keys.camera_stats(camera_id), checked("camera", name), amount)


def count_processor(pipe: Any, processor: str, name: str, amount: int = 1) -> None:
    """Add to one processor's counter."""
    pipe.hincrby(keys.processor_stats(processor), checked("processor", name), amount)


def count_routed(pipe: Any, frames: list[tuple[str, list[str]]]) -> None:
    """Count a batch of routed frames, each as (camera, the processors it went to): `in` and `routed` of
    each camera, `routed` of each processor, and the indexes of both; one command per camera and
    processor, not per frame."""
    if not frames:
        return
    arrived: Tally[str] = Tally(camera for camera, _ in frames)
    pairs: Tally[str] = Tally()
    processors: Tally[str] = Tally()
    for camera, names in frames:
        pairs[camera] += len(names)
        processors.update(names)
    pipe.sadd(keys.CAMERAS_INDEX, *arrived)
    if processors:
        pipe.sadd(keys.PROCESSORS_INDEX, *processors)
    for camera, count in arrived.items():
        count_camera(pipe, camera, "in", count)
        count_camera(pipe, camera, "routed", pairs[camera])
    for name, count in processors.items():
        count_processor(pipe, name, "routed", count)


def _read(raw: dict[bytes, bytes], scope: Scope) -> dict[str, int]:
    return {name: int(float(raw.get(name.encode(), 0))) for name in _NAMES[scope]}


def read_ingest(redis: Any) -> dict[str, int]:
    """Every ingest counter."""
    return _read(redis.hgetall(keys.INGEST_STATS), "ingest")


def read_camera(redis: Any, camera_id: str) -> dict[str, int]:
    """Every counter of one camera."""
    return _read(redis.hgetall(keys.camera_stats(camera_id)), "camera")


def read_processor(redis: Any, processor: str) -> dict[str, int]:
    """Every counter of one processor."""
    return _read(redis.hgetall(keys.processor_stats(processor)), "processor")

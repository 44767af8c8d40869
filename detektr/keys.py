"""Every Redis key, stream, group and queue name detektr uses, in one place.

Nothing else in the code base spells a key. The input stream's name is configurable
(`Settings.input_stream`); everything else is fixed here and documented in docs/contract.md.
"""

from __future__ import annotations

PREFIX = "detektr"

DEFAULT_INPUT_STREAM = "frames:capture"
"""The stream cameras append frames to, unless DETEKTR_INPUT_STREAM names another."""

DEAD_LETTER_STREAM = "frames:dead"
"""Stream of frames (or frame/processor pairs) that could not be handled, each with a reason."""

WORKERS_INDEX = f"{PREFIX}:workers"
"""Sorted set: worker hostname -> Unix time of its last heartbeat."""

PRIORITY_STEPS = tuple(range(10))
"""Celery priority levels on the Redis transport (0 is served first)."""

_KOMBU_PRIORITY_SEP = "\x06\x16"


def frame_bytes(frame_id: str) -> str:
    """Key holding one frame's encoded bytes, stored once by ingest (with a TTL)."""
    return f"{PREFIX}:frame:{frame_id}"


def frame_refs(frame_id: str) -> str:
    """Key counting the (frame, processor) pairs still owed work on a frame whose bytes ingest stored."""
    return f"{PREFIX}:refs:{frame_id}"


def frame_seen(frame_id: str) -> str:
    """Key marking that a frame id was taken by ingest; its value is the stream entry id."""
    return f"{PREFIX}:seen:{frame_id}"


def result_published(processor: str, frame_id: str) -> str:
    """Key marking that the pair (`processor`, `frame_id`) has ended: its result published, or dead, gated out..."""
    return f"{PREFIX}:done:{processor}:{frame_id}"


def default_result_stream(processor: str) -> str:
    """The result stream a processor writes to unless it names its own."""
    return f"results:{processor}"


def worker_heartbeat(hostname: str) -> str:
    """Key holding one worker's last heartbeat (JSON), with a TTL."""
    return f"{PREFIX}:worker:{hostname}"


def camera_stats(camera_id: str) -> str:
    """Hash of counters for one camera (declared in detektr.stats)."""
    return f"{PREFIX}:stats:camera:{camera_id}"


def processor_stats(processor: str) -> str:
    """Hash of counters for one processor (declared in detektr.stats)."""
    return f"{PREFIX}:stats:processor:{processor}"


CAMERAS_INDEX = f"{PREFIX}:cameras"
"""Set of camera ids that ingest has seen."""

def breaker(processor: str) -> str:
    """Hash of one processor's circuit breaker: state, since, the counters it last saw, reason."""
    return f"{PREFIX}:breaker:{processor}"


CHECKS_RAN = f"{PREFIX}:checks-ran"
"""String: Unix time at which the processors check last ran (beat's health: `python -m detektr.healthcheck beat`)."""

BACKPRESSURE = f"{PREFIX}:backpressure"
"""Hash: processor -> JSON {level, depth, limit}, written by the processors check, read by ingest."""

PROCESSORS_INDEX = f"{PREFIX}:processors"
"""Set of processor names that ingest has routed frames to (whose counters the accounting reads)."""

INGEST_STATS = f"{PREFIX}:stats:ingest"
"""Hash of ingest-wide counters (declared in detektr.stats)."""


def worker_queue(queue: str, hostname: str) -> str:
    """A worker's own queue for a processor routed with affinity (a camera sticks to one worker)."""
    return f"{queue}:{hostname}"


WORKER_QUEUES = f"{PREFIX}:worker-queues"
"""Hash: worker-own queue -> JSON {hostname, queue}; lets beat move tasks off a dead worker's queue."""


def task_name(processor: str) -> str:
    """The Celery task name of a processor."""
    return f"detektr.process.{processor}"


def celery_queue_lists(queue: str) -> list[str]:
    """The Redis lists that kombu keeps for one Celery queue, one per priority level."""
    return [queue] + [f"{queue}{_KOMBU_PRIORITY_SEP}{step}" for step in PRIORITY_STEPS if step]


def capture_state(camera_id: str) -> str:
    """Hash of one captured camera's state: connected, fps, frames captured and skipped, last error."""
    return f"{PREFIX}:capture:{camera_id}"


CAPTURE_CAMERAS = f"{PREFIX}:capture-cameras"
"""Set of camera ids that `detektr capture` has run."""


KOMBU_UNACKED = "unacked"
"""kombu's hash (Redis transport): delivery tag -> JSON [message, exchange, routing key] of each message
delivered to a worker and not yet acknowledged (late acks). kombu's default name, set in celeryconfig."""

KOMBU_UNACKED_INDEX = "unacked_index"
"""kombu's sorted set: delivery tag -> Unix time of delivery. Live workers set their held tags' times
to now on every heartbeat; beat gives back the messages whose time has gone stale (`detektr.held`)."""


def registered_processor(processor: str) -> str:
    """String (JSON) holding an external processor registered through the API, with a TTL when it asked for one."""
    return f"{PREFIX}:registered:{processor}"


REGISTERED_PROCESSORS = f"{PREFIX}:registered-processors"
"""Set of the names of processors registered through the API (a member whose record expired is skipped)."""

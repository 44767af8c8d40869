"""`detektr ingest`: input-stream entries become Celery tasks on per-processor queues.

For each batch the `FrameIngestor` reads entries with XREADGROUP (and, every few seconds,
reclaims entries left pending by a dead consumer with XAUTOCLAIM), validates them, asks the router
where each frame goes, publishes the tasks, and only then acknowledges the entries (at-least-once).
Tasks carry where a frame's bytes are, never the bytes: inline bytes stay in their entry, which is
deleted once the frame's last processor is done (`detektr.outcomes`); every other entry is
deleted as it is acknowledged (unless `DETEKTR_INGEST__KEEP_ENTRIES`). Frames for one queue share tasks
(`router.task_sizes`); while every worker process of a queue has a task waiting, its new frames
are held back (`detektr.holding`), at most `max_hold_ms`, and leave in fuller tasks; their
entries are acknowledged when they leave. Whatever cannot be handled goes
to `frames:dead` with a stage and a reason, and is acknowledged too: nothing disappears.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.exceptions import OperationalError

from . import frame_spans, keys, stats
from .backpressure import read_count
from .breaker import open_processors
from .claims import FrameIdClaims, refusal
from .config import Settings
from .deadletter import add_dead_letter, dead_letter_fields
from .errors import FrameRejected
from .frame import EntryRef, FrameEntry, FrameRef, GatedTask, parse_entry
from .holding import FrameHolder
from .input_stream import TRIM_WARNING, Entry, InputStream
from .metrics import observe_routing
from .outcomes import Ending, FrameOutcomes, ended_with
from .registry import LiveProcessor, live_processors, queue_depths, read_levels
from .router import Destination, Router, RoutingTable, queue_capacity

log = logging.getLogger(__name__)


@dataclass
class _Accepted:
    entry_id: str
    fields: dict[bytes, bytes]
    frame: FrameEntry
    data: bytes | None
    image_key: str | None = None
    image_entry: EntryRef | None = None
    owners: int = 0
    """`FrameRef.owners`: the pairs sharing bytes that detektr deletes (0: not detektr's to delete)."""
    destinations: tuple[Destination, ...] = ()
    """The router's plan: the tasks the frame goes into now, each with the processors after its gate."""
    span: Any = None
    """The frame's `detektr.receive` span, while tracing (`detektr.frame_spans`)."""

    @property
    def pairs(self) -> list[str]:
        """Every processor the frame is routed to, those riding along after a gate included."""
        return [name for d in self.destinations for name in (d.processor, *(f for f, _ in d.followers))]


HOLD_POLL_MS = 5
"""While frames are held, how often ingest looks whether their queue has drained."""


@dataclass
class BatchOutcome:
    """What one batch did: counts for logs and tests."""

    read: int = 0
    routed: int = 0
    tasks: int = 0
    dead: int = 0
    dead_reasons: list[str] = field(default_factory=list)


def default_consumer_name() -> str:
    """A consumer name unique to this process: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class FrameIngestor:
    """Reads the input stream and turns frames into routed Celery tasks."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        celery_app: Any,
        consumer: str | None = None,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.redis = client
        self.app = celery_app
        self.consumer = consumer or default_consumer_name()
        self.router = router or Router()
        self.stream = settings.input_stream
        self.group = settings.ingest.group
        self._live: dict[str, LiveProcessor] = {}
        self._served_outside: set[str] = set()
        self._table: RoutingTable | None = None
        self._table_at = 0.0
        self._last_claim = 0.0
        self._held = FrameHolder(settings.ingest.frames_per_task, settings.ingest.max_hold_ms)
        self._finished: list[str] = []
        """Entries whose held frames were all replaced (skipped): acknowledged with the next batch."""
        self._bytes_in_entry: set[str] = set()
        """Entries holding the bytes of a frame routed on: deleted by its last ending, not when acknowledged."""
        self._levels: dict[str, str] = {}
        self._policies: dict[str, str] = {}
        self.input = InputStream(client, self.stream, self.group, self.consumer, settings)
        self.outcomes = FrameOutcomes(client, stream_maxlen=settings.results.stream_maxlen,
                                      dedupe_ttl_s=settings.results.dedupe_ttl_s)
        self.claims = FrameIdClaims(client, settings.results.dedupe_ttl_s)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Ingest until `stop` is set; Redis outages are waited out, never fatal."""
        backoff_s = 0.5
        ready = False
        outage = False
        while not stop.is_set():
            try:
                if not ready:
                    self.input.ensure_group()
                    log.info("ingest %s reading %s as group %s", self.consumer, self.stream, self.group)
                    ready = True
                if outage:  # the server is back: give workers a heartbeat's time to say they are live
                    self.redis.ping()
                    outage = False
                    log.info("server back; routing again in %.1fs, once workers have announced themselves",
                             self.settings.worker.heartbeat_ttl_s)
                    stop.wait(self.settings.worker.heartbeat_ttl_s)
                    continue
                self.step()
                backoff_s = 0.5
                if stop.is_set():
                    self.release_held(force=True)
            except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
                # The server is away (or restarting): what was read and not acknowledged stays pending
                # and is handled again, by this consumer or, after claim_idle_ms, by another.
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff_s)
                outage = True
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted under us
                    self.input.ensure_group()
                    continue
                self._survive(stop, exc, backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)
            except Exception as exc:  # a bug or a server refusing (out of memory): never fatal
                self._survive(stop, exc, backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)

    def _survive(self, stop: threading.Event, exc: Exception, backoff_s: float) -> None:
        """Log an unexpected failure of one step and wait; its entries stay pending and are handled again."""
        log.error("ingest step failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, backoff_s,
                  exc_info=exc)
        stop.wait(backoff_s)

    def step(self) -> BatchOutcome:
        """Reclaim if due, then read and handle one batch."""
        outcome = BatchOutcome()
        now = time.monotonic()
        if now - self._last_claim >= self.settings.ingest.claim_interval_s:
            self._last_claim = now
            self.input.unread()  # says so loudly when the stream's bound is about to trim unread frames
            if not self.settings.ingest.keep_entries:  # entries a lost task left behind
                self.input.trim_settled(self.settings.frames.ttl_s)
            reclaimed = self.input.reclaim()
            if reclaimed:
                outcome = self.handle(reclaimed)
        entries = self.read()
        if not entries and self._held:
            self.release_held()
        if entries:
            more = self.handle(entries)
            outcome.read += more.read
            outcome.routed += more.routed
            outcome.tasks += more.tasks
            outcome.dead += more.dead
            outcome.dead_reasons += more.dead_reasons
        return outcome

    def read(self) -> list[Entry]:
        """Read new entries for this consumer (blocks up to `block_ms`); fewer, or none, under `pause` backpressure."""
        count = read_count(self.settings.ingest.batch_size, self._levels, self._policies)
        if not count and self.input.unread() >= TRIM_WARNING * self.settings.input_maxlen:
            count = self.settings.ingest.batch_size  # read ahead of the stream's trimming: queued, never lost
        if not count:  # a processor that must see every frame is overwhelmed: frames wait in the stream
            time.sleep(min(self.settings.ingest.block_ms, 100) / 1000)
            self.routing_table()  # the levels come with the table: look again whether to read
            return []
        return self.input.read(count, min(self.settings.ingest.block_ms, HOLD_POLL_MS) if self._held
                               else self.settings.ingest.block_ms)

    def routing_table(self) -> RoutingTable:
        """The routing table, re-read from heartbeats and queue depths when older than the refresh interval."""
        now = time.monotonic()
        if self._table is None or now - self._table_at >= self.settings.ingest.registry_refresh_s:
            self._live = live_processors(self.redis, self.settings.worker.heartbeat_ttl_s)
            self._served_outside = {name for name, live in self._live.items() if live.external}
            depths = queue_depths(self.redis, {p.queue for p in self._live.values()})
            self._table = RoutingTable.from_live(self._live, depths, self.settings.routing, self.settings.gates,
                                                 open_processors(self.redis, self._live))
            fresh_s = 5 * self.settings.beat.processors_interval_s  # older levels no longer hold (no beat running)
            self._levels = {name: value["level"] for name, value in read_levels(self.redis, fresh_s).items()}
            self._policies = {name: live.overload for name, live in self._live.items()}
            self._table_at = now
        return self._table

    def handle(self, entries: list[Entry]) -> BatchOutcome:
        """Validate, store, route, publish and acknowledge one batch of entries."""
        outcome = BatchOutcome(read=len(entries))
        read_ns = time.time_ns()
        maxlen = self.settings.results.stream_maxlen
        finish = self.redis.pipeline(transaction=False)  # dead letters, counters and acks, at the end

        def dead(entry_id: str, fields: dict[Any, Any], stage: str, reason: str, **ids: str) -> None:
            add_dead_letter(finish, maxlen, dead_letter_fields(stage, reason, fields, **ids))  # type: ignore[arg-type]
            stats.count_ingest(finish, "dead")
            outcome.dead += 1
            outcome.dead_reasons.append(reason)

        validated = self._validate(entries, dead)
        for item in validated:
            item.span = frame_spans.receive(item.frame, item.entry_id, read_ns)  # None when not tracing
        accepted = self._claim_frame_ids(validated, dead, finish)
        if accepted:
            table = self.routing_table()
            routed: list[_Accepted] = []
            for item in accepted:
                with frame_spans.routing(item.span) as route:
                    started = time.perf_counter()
                    plan = self.router.plan(table, item.frame.camera_id, item.frame.capabilities)
                    observe_routing(time.perf_counter() - started)  # detektr_ingest_routing_seconds
                    route.chose(plan)
                if plan.unavailable:
                    dead(item.entry_id, item.fields, "route", table.why_unavailable(plan.unavailable))
                if plan.ungated:
                    stats.count_ingest(finish, "ungated", len(plan.ungated))
                if plan.destinations:
                    item.destinations = plan.destinations
                    routed.append(item)
            self._store_and_hold(routed)
            stats.count_routed(finish, [(item.frame.camera_id, item.pairs) for item in routed])
            outcome.routed = len(routed)
            outcome.tasks = sum(len(item.destinations) for item in routed)
        for item in validated:
            frame_spans.end_receive(item.span, routed=bool(item.destinations))
        released = self._release(finish)
        stats.count_ingest(finish, "read", len(entries))
        done = [entry_id for entry_id in (raw.decode() if isinstance(raw, bytes) else raw for raw, _ in entries)
                if not self._held.holds(entry_id)]  # an entry with frames still held is acknowledged when they leave
        self._acknowledge(finish, [*done, *released])
        finish.execute()
        return outcome

    def release_held(self, force: bool = False) -> None:
        """Send the held frames whose queue has drained (or all, with `force`), and acknowledge their entries."""
        finish = self.redis.pipeline(transaction=False)
        self._acknowledge(finish, self._release(finish, force))
        finish.execute()

    def _acknowledge(self, pipe: Any, entry_ids: list[str]) -> None:
        """Acknowledge entries, and delete those no frame's bytes are left in (unless they are kept)."""
        if not entry_ids:
            return
        pipe.xack(self.stream, self.group, *entry_ids)
        if self.settings.ingest.keep_entries:
            return
        settled = [entry_id for entry_id in entry_ids if entry_id not in self._bytes_in_entry]
        self._bytes_in_entry.difference_update(entry_ids)
        if settled:
            pipe.xdel(self.stream, *settled)

    def _validate(self, entries: list[Entry], dead: Any) -> list[_Accepted]:
        accepted = []
        limits = self.settings.frames
        for raw_id, fields in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            try:
                frame, data = parse_entry(fields, limits)
            except FrameRejected as exc:
                dead(entry_id, fields, "ingest", exc.reason)
                continue
            except Exception as exc:  # whatever an entry holds, it never stops ingest: it is dead-lettered
                log.exception("entry %s could not be read", entry_id)
                dead(entry_id, fields, "ingest", f"entry could not be read: {type(exc).__name__}: {exc}")
                continue
            accepted.append(_Accepted(entry_id, fields, frame, data))
        return accepted

    def _claim_frame_ids(self, accepted: list[_Accepted], dead: Any, counters: Any) -> list[_Accepted]:
        """Refuse duplicate frame ids and missing `image_key`s; a reclaimed entry keeps its claim."""
        found = self.claims.claim([(item.frame.frame_id, item.entry_id, item.frame.image_key) for item in accepted])
        kept = []
        for item, claim in zip(accepted, found):
            image_key = item.frame.image_key
            reason = refusal(claim, item.entry_id, item.frame.frame_id, image_key, self.settings.frames.max_bytes)
            if reason is None and isinstance(claim.image_size, Exception):
                reason = f"image_key {image_key!r} holds a {self.redis.type(image_key).decode()}, not frame bytes"
            if reason is not None:
                if claim.duplicate(item.entry_id):
                    stats.count_ingest(counters, "duplicates")
                dead(item.entry_id, item.fields, "ingest", reason)
                continue
            kept.append(item)
        return kept

    def _store_and_hold(self, routed: list[_Accepted]) -> None:
        """Say where each frame's bytes are (storing them only where they cannot stay in their entry), and
        add its references to what is held for its queues."""
        if not routed:
            return
        pipe = self.redis.pipeline(transaction=False)
        ttl_s, keep = self.settings.frames.ttl_s, self.settings.ingest.keep_entries
        for item in routed:
            if item.data is None:  # the producer's key
                item.image_key = item.frame.image_key
                continue
            if item.frame.image is not None and not self._external(item.pairs):  # left where it came
                item.image_entry = EntryRef(stream=self.stream, id=item.entry_id)
                self._bytes_in_entry.add(item.entry_id)
            else:  # base64 text, or a processor outside this code base that reads a key: stored once
                item.image_key = keys.frame_bytes(item.frame.frame_id)
                pipe.set(item.image_key, item.data, ex=ttl_s)
            if item.image_key or not keep:  # the bytes go when the last (frame, processor) pair ends
                item.owners = len(item.pairs)
                if item.owners > 1:  # which end is the last: a reference count
                    pipe.set(keys.frame_refs(item.frame.frame_id), item.owners, ex=ttl_s)
        if len(pipe):
            pipe.execute()
        now = time.time()
        skipped: list[Ending] = []
        for item in routed:
            frame = item.frame
            ref = FrameRef(
                frame_id=frame.frame_id, camera_id=frame.camera_id, timestamp=frame.timestamp,
                format=frame.format, width=frame.width, height=frame.height, image_key=item.image_key,
                image_entry=item.image_entry, owners=item.owners, priority=frame.priority, metadata=frame.metadata,
                traceparent=frame.traceparent, ingested_at=now,
            )
            for destination in item.destinations:
                then = tuple(GatedTask(processor=name, queue=queue) for name, queue in destination.followers)
                payload = (ref.model_copy(update={"then": then}) if then else ref).model_dump(exclude_none=True)
                if item.span is not None:  # the frame's task carries its dispatch span's trace context
                    payload["traceparent"] = frame_spans.dispatch(item.span, destination.processor, destination.queue)
                replaced, finished = self._held.hold(destination.processor, destination.queue, frame.priority,
                                                     payload, item.entry_id, self._shedding(destination.processor))
                self._finished += finished
                for older in replaced:  # backpressure: the camera's newer frame goes instead
                    frame_spans.dispatch_skipped(older)
                    skipped += ended_with(destination.processor, FrameRef.model_validate(older), "skipped")
        self.outcomes.end(skipped)

    def _external(self, processors: list[str]) -> bool:
        """Whether any of these processors is served outside this code base (it reads a frame's bytes by key)."""
        return not self._served_outside.isdisjoint(processors)

    def _shedding(self, processor: str) -> str:
        """The backpressure level a processor's frames are held under, if it sheds ("normal" if it pauses)."""
        return self._levels.get(processor, "normal") if self._policies.get(processor) == "shed" else "normal"

    def _release(self, finish: Any, force: bool = False) -> list[str]:
        """Send the held frames that should not wait any longer (`detektr.holding`); the entries fully sent."""
        finished, self._finished = self._finished, []  # entries whose held frames were all replaced
        if not self._held:
            return finished
        depths = {} if force else queue_depths(self.redis, self._held.queues)
        return finished + self._held.release(self.app, finish, depths,
                                             lambda name, queue: queue_capacity(self._live.get(name), queue), force)

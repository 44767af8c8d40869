"""What a worker does with its tasks: fetch frames, decode, validate, run, publish or dead-letter.

A task carries one frame reference or a list of them (ingest puts several frames for one queue
into one task when it reads a backlog). `run_task` calls the processor once per frame,
`run_batch` once per batch of frames (batched processors); the bytes of a task's frames are
fetched and decoded ahead of the processor (`detektr.fetching`), and their results published
together (at least every 50 ms). Each frame is handled on its own: one past its deadline is
counted as expired; a failing processor is retried by sending that frame again with a delay
(exponential backoff) until its attempts are spent, then the frame is dead-lettered with the
exception. After a gating processor (motion) has published, each frame goes on to the
processors waiting on its gate, or they are counted as gated out. Every (frame, processor) pair
ends once (`detektr.outcomes`).

Celery (and so Flower) sees how a task's frames fared: a task with a frame to try again ends in
a Celery retry that carries those frames (state RETRY), one with a frame dead-lettered after its
last attempt raises `ProcessorFailed` once everything else is done (state FAILURE). A batched
task's requests say the same through their task events (`detektr.tasks`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.exceptions import Reject
from pydantic import ValidationError

from . import frame_spans, stats
from .deadletter import add_dead_letter, dead_letter_fields
from .dispatch import frames_repr, send_frames
from .errors import FrameRejected, ProcessorFailed
from .fetching import FETCH_FRAMES, decoded_frames
from .frame import Frame, FrameRef, carried_gate_result
from .metrics import InferenceTimer
from .outcomes import Ending, ended_with, past_deadline
from .processor import ProcessorSpec
from .requeue import SERVER_LOST, requeue_on_server_loss
from .results import encode_result
from .router import celery_priority
from .runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)


def retry_delay_s(attempt: int, first_s: float, max_s: float) -> float:
    """Exponential backoff: first_s, 2*first_s, 4*first_s, ... capped at max_s (attempt counts from 0)."""
    return min(max_s, first_s * (2**attempt))


def _dead(rt: WorkerRuntime, spec: ProcessorSpec, ref: FrameRef, reason: str) -> None:
    """Dead-letter a frame for this processor, and for the processors waiting on its gate (which cannot run).

    Each (frame, processor) pair ends once (`detektr.outcomes`).
    """
    original = ref.model_dump(exclude={"then", "gate_result"}, exclude_none=True)
    endings = [Ending(spec.name, ref, "dead", dead_letter_fields(
        "process", reason, original, frame_id=ref.frame_id, camera_id=ref.camera_id, processor=spec.name))]
    endings += [Ending(follower.processor, ref, "dead", dead_letter_fields(
        "process", f"not run: {spec.name}, whose gate it waits on, failed: {reason}", original,
        frame_id=ref.frame_id, camera_id=ref.camera_id, processor=follower.processor)) for follower in ref.then]
    rt.outcomes.end(endings)


def _refuse(rt: WorkerRuntime, spec: ProcessorSpec, reason: str, payload: Any) -> None:
    """Dead-letter what came in a task but is no frame reference, as it is; counted nowhere: ingest never routed it."""
    payload = payload if isinstance(payload, dict) else {}
    original = {k: v for k, v in payload.items() if k != "then"}
    entry = dead_letter_fields("process", reason, original, processor=spec.name,
                               frame_id=str(payload.get("frame_id") or "") or None,
                               camera_id=str(payload.get("camera_id") or "") or None)
    add_dead_letter(rt.redis, rt.settings.results.stream_maxlen, entry, count=False)


PUBLISH_EVERY_S = 0.05
"""Results of a task's frames are published together, but never held back longer than this."""

MAX_FRAMES_PER_TASK = 1024
"""A task carrying more frame references than this is refused (dead-lettered) unread."""

def _parse(rt: WorkerRuntime, spec: ProcessorSpec, payload: Any) -> FrameRef | None:
    if not isinstance(payload, dict):
        _refuse(rt, spec, f"task payload is {type(payload).__name__}, not a frame reference", {})
        return None
    try:
        return FrameRef.model_validate(payload)
    except ValidationError as exc:
        _refuse(rt, spec, f"task payload is not a frame reference: {exc.error_count()} errors", payload)
        return None


def parse_payloads(rt: WorkerRuntime, spec: ProcessorSpec, payloads: list[Any]) -> list[FrameRef]:
    """A task's frame references, in order: each argument is one reference or a list of them.

    What is not a frame reference is dead-lettered with the reason, and the rest still runs.
    """
    return [ref for ref, _ in parse_delivered(rt, spec, [(payload, None) for payload in payloads])]


def parse_delivered(
    rt: WorkerRuntime, spec: ProcessorSpec, delivered: list[tuple[Any, str | None]]
) -> list[tuple[FrameRef, str]]:
    """Like `parse_payloads`, for (payload, queue it came from) pairs: each frame with its queue.

    A frame that fails goes back to the queue it came from (a worker's own queue for affinity
    processors: the camera's state is there); the processor's queue when Celery did not say.
    """
    refs: list[tuple[FrameRef, str]] = []
    for payload, queue in delivered:
        queue = queue or spec.queue
        if isinstance(payload, list):
            if len(payload) > MAX_FRAMES_PER_TASK:
                _refuse(rt, spec, f"task carries {len(payload)} frame references, more than the limit of "
                        f"{MAX_FRAMES_PER_TASK}", {})
                continue
            refs += [(ref, queue) for ref in (_parse(rt, spec, item) for item in payload) if ref is not None]
        else:
            ref = _parse(rt, spec, payload)
            if ref is not None:
                refs.append((ref, queue))
    return refs


def _retry_or_dead(task: Any, rt: WorkerRuntime, spec: ProcessorSpec, ref: FrameRef, queue: str,
                   exc: Exception, retries: list[tuple[dict[str, Any], float, int]] | None = None) -> bool:
    """Send the frame back to `queue` after a backoff delay (or add it to `retries`, to go back with the
    task's own Celery retry), or dead-letter it once its attempts are spent: then True."""
    limit = spec.max_retries if spec.max_retries is not None else rt.settings.worker.max_retries
    counters = rt.redis.pipeline(transaction=False)
    stats.count_processor(counters, spec.name, "failed")
    if ref.attempt < limit:
        delay = retry_delay_s(ref.attempt, rt.settings.worker.retry_backoff_s, rt.settings.worker.retry_backoff_max_s)
        log.warning("processor %s failed on %s (attempt %d), retrying in %.2fs: %r",
                    spec.name, ref.frame_id, ref.attempt + 1, delay, exc)
        again = ref.model_copy(update={"attempt": ref.attempt + 1}).model_dump(exclude_none=True)
        if retries is None:
            send_frames(task.app, counters, spec.name, queue, [again], ref.priority, countdown=delay)
        else:
            retries.append((again, delay, ref.priority))
        counters.execute()
        return False
    counters.execute()
    log.error("processor %s failed on %s after %d attempts: %r", spec.name, ref.frame_id, ref.attempt + 1, exc)
    _dead(rt, spec, ref, f"processor raised {type(exc).__name__}: {exc} (after {ref.attempt + 1} attempts)")
    return True


def _end_as_celery_sees_it(task: Any, rt: WorkerRuntime, spec: ProcessorSpec, queue: str,
                           retries: list[tuple[dict[str, Any], float, int]], spent: int,
                           error: Exception | None) -> None:
    """Let Celery (and Flower) see a task whose frames failed as retried, or as failed once their attempts are spent.

    The frames to try again leave in one Celery retry of the task (state RETRY, with the
    processor's last exception), after the shortest of their backoff delays; when none is left to
    retry but some were dead-lettered, the task fails (state FAILURE). Called after every other
    frame of the task was published.
    """
    if retries:
        try:
            payloads = [payload for payload, _, _ in retries]
            retry = task.retry(args=[payloads], argsrepr=frames_repr(payloads), exc=error, throw=False,
                               countdown=min(delay for _, delay, _ in retries), queue=queue,
                               priority=celery_priority(max(priority for _, _, priority in retries)),
                               max_retries=None)
        except Reject as exc:  # Celery drops a task whose retry it could not send: requeue it while the server is away
            if isinstance(exc.reason, SERVER_LOST):
                raise exc.reason from None
            raise
        counters = rt.redis.pipeline(transaction=False)
        stats.count_processor(counters, spec.name, "retries", len(retries))
        counters.execute()
        raise retry
    if spent:
        raise ProcessorFailed(f"{spent} frame(s) of this task were dead-lettered after their last attempt; "
                              f"the last error: {error!r}") from error


def _gate_opens(spec: ProcessorSpec, ref: FrameRef, result: Any) -> bool:
    try:
        return bool(spec.gate(result))  # type: ignore[misc]
    except Exception as exc:  # a broken gate must not hide frames: let them through
        log.warning("gate of %s failed on %s (%r); letting the frame through", spec.name, ref.frame_id, exc)
        return True


def _publish(task: Any, rt: WorkerRuntime, spec: ProcessorSpec, done: list[tuple[FrameRef, Any]],
             counters: dict[str, int] | None = None) -> None:
    """Publish the results of a task's frames in one round trip; then pass the frames through the gate.

    `counters` are added to the processor's stats in the same round trip.
    """
    ready: list[tuple[FrameRef, str, dict[str, str] | None]] = []
    gates: list[bool] = []
    for ref, result in done:
        try:
            result_json = encode_result(result)
        except (TypeError, ValueError) as exc:
            _dead(rt, spec, ref, f"result is not JSON-serializable: {exc}")
            continue
        extra = None
        gate_open = True
        if spec.gate is not None and ref.then:
            gate_open = _gate_opens(spec, ref, result)
            extra = {"gate": "open" if gate_open else "closed",
                     "gated": ",".join(follower.processor for follower in ref.then)}
        ready.append((ref, result_json, extra))
        gates.append(gate_open)
    if not ready and not counters:
        return
    published = rt.publisher.publish_many(spec.name, spec.result_stream, ready, counters)
    passing = []
    for (ref, result_json, _), gate_open, fresh in zip(ready, gates, published):
        if not fresh:
            log.info("result of %s for %s was already published; duplicate delivery ignored", spec.name, ref.frame_id)
        elif ref.then:
            passing.append((ref, gate_open, result_json))
    if passing:
        _pass_gate(task, rt, passing)


def _pass_gate(task: Any, rt: WorkerRuntime, passing: list[tuple[FrameRef, bool, str]]) -> None:
    """Send frames whose gate opened on to the processors waiting on it, with the gating processor's result
    (when small enough: `carried_gate_result`); count the others as gated out.

    Each frame goes on in a task of its own, so that the (usually heavy) followers spread over
    all their worker processes.
    """
    pipe = rt.redis.pipeline(transaction=False)
    kept_back: list[Ending] = []
    with task.app.producer_or_acquire() as producer:
        for ref, gate_open, result_json in passing:
            if gate_open:
                onward = ref.model_copy(update={"then": (), "attempt": 0,
                                                "gate_result": carried_gate_result(result_json)})
                onward = onward.model_dump(exclude_none=True)
                for follower in ref.then:
                    send_frames(task.app, pipe, follower.processor, follower.queue, [onward], ref.priority,
                                producer=producer)
            else:
                kept_back += [Ending(follower.processor, ref, "gated_out") for follower in ref.then]
    pipe.execute()
    rt.outcomes.end(kept_back)


@requeue_on_server_loss
def run_task(task: Any, spec: ProcessorSpec, payload: Any, queue: str | None = None) -> None:
    """The body of every single-frame processor task: the function runs once per frame.

    A task carries one frame reference or a list of them (ingest puts several frames for one
    queue into one task under a backlog). Each frame fails, retries or is dead-lettered on its
    own; results are published together, at the latest `PUBLISH_EVERY_S` after the previous ones.
    A frame that fails goes back to `queue`, the one the task came from.
    """
    rt = current_runtime()
    refs = parse_payloads(rt, spec, [payload])
    if not refs:
        return
    queue = queue or spec.queue
    done: list[tuple[FrameRef, Any]] = []
    late: list[Ending] = []
    retries: list[tuple[dict[str, Any], float, int]] = []
    spent = 0
    error: Exception | None = None
    published_at = time.monotonic()
    timer = InferenceTimer(spec.name)  # the function's own time: a histogram, and counters for the API
    overlap = rt.overlap(spec.name)
    for ref, frame in decoded_frames(rt, refs, overlap.ahead(rt.settings.worker.decode_ahead, 1), overlap=overlap):
        if done and time.monotonic() - published_at >= PUBLISH_EVERY_S:  # results of a long task do not wait
            _publish(task, rt, spec, done, timer.take())
            done, published_at = [], time.monotonic()
        if _past_deadline(rt, spec, ref):
            late += ended_with(spec.name, ref, "expired")
            continue
        try:
            if isinstance(frame, FrameRejected):
                raise frame
            with frame_spans.processing(spec.name, ref) as ref:  # the frame's span; its result carries its context
                if spec.validate is not None:
                    spec.validate(frame)
                result = timer.call(spec.call, 1, frame, rt.state_for(spec))
                overlap.worked(timer.last_s, 1)
        except FrameRejected as exc:
            _dead(rt, spec, ref, exc.reason)
            continue
        except Exception as exc:  # a processor bug or a transient failure: retry, then dead-letter
            spent += _retry_or_dead(task, rt, spec, ref, queue, exc, retries)
            error = exc
            continue
        done.append((ref, result))
    _publish(task, rt, spec, done, timer.take())
    rt.outcomes.end(late)
    _end_as_celery_sees_it(task, rt, spec, queue, retries, spent, error)


def _past_deadline(rt: WorkerRuntime, spec: ProcessorSpec, ref: FrameRef) -> bool:
    max_age_ms = spec.max_age_ms if spec.max_age_ms is not None else rt.settings.frames.max_age_ms
    return past_deadline(ref.ingested_at, time.time(), max_age_ms)


BatchOutcome = tuple[str, str]
"""How one request of a batched task ended, named as Celery names task states, with the processor's error:
`("SUCCESS", "")`, `("RETRY", error)` (a frame of it was sent back) or `("FAILURE", why)` (one was
dead-lettered after its last attempt)."""


@requeue_on_server_loss
def run_batch(task: Any, spec: ProcessorSpec, delivered: list[tuple[Any, str | None]]) -> list[BatchOutcome]:
    """The body of a batched processor's task: one call of the function per batch of frames.

    `delivered` holds the argument of each request celery-batches collected (one frame reference
    or a list of them) with the queue it came from; the frames are cut into batches of at most
    `batch_size`. Returns how each request ended, in order, for its task events (Flower).
    """
    rt = current_runtime()
    outcomes: list[BatchOutcome] = [("SUCCESS", "")] * len(delivered)
    pairs: list[tuple[FrameRef, str]] = []
    origin: dict[str, int] = {}  # frame_id -> the request it came in
    for index, item in enumerate(delivered):
        for ref, queue in parse_delivered(rt, spec, [item]):
            pairs.append((ref, queue))
            origin[ref.frame_id] = index
    if not pairs:
        return outcomes
    refs = [ref for ref, _ in pairs]
    queues = {ref.frame_id: queue for ref, queue in pairs}
    size = spec.batch_size or len(refs)
    frames: list[Frame] = []
    kept: list[FrameRef] = []
    late: list[Ending] = []
    failed: list[tuple[FrameRef, str, str]] = []
    overlap = rt.overlap(spec.name)
    ahead = overlap.ahead(rt.settings.worker.decode_ahead, size)
    for ref, frame in decoded_frames(rt, refs, ahead, max(size, FETCH_FRAMES), overlap):
        if _past_deadline(rt, spec, ref):
            late += ended_with(spec.name, ref, "expired")
            continue
        try:
            if isinstance(frame, FrameRejected):
                raise frame
            if spec.validate is not None:
                spec.validate(frame)
        except FrameRejected as exc:
            _dead(rt, spec, ref, exc.reason)
            continue
        frames.append(frame)
        kept.append(ref)
        if len(frames) == size:
            failed += _run_one_batch(task, rt, spec, frames, kept, queues)
            frames, kept = [], []
    if frames:
        failed += _run_one_batch(task, rt, spec, frames, kept, queues)
    rt.outcomes.end(late)
    for ref, state, error in failed:  # a request with a frame sent back is retried, as run_task's task is
        index = origin[ref.frame_id]
        if outcomes[index][0] != "RETRY":
            outcomes[index] = (state, error)
    return outcomes


def _run_one_batch(task: Any, rt: WorkerRuntime, spec: ProcessorSpec, frames: list[Frame],
                   refs: list[FrameRef], queues: dict[str, str]) -> list[tuple[FrameRef, str, str]]:
    """Run one batch and publish its results; return the frames of a failed call, each with
    `RETRY` (sent back for another attempt) or `FAILURE` (dead-lettered), and the error."""
    timer = InferenceTimer(spec.name)
    try:
        with frame_spans.processing_batch(spec.name, refs) as refs:  # a span per frame
            results = list(timer.call(spec.call, len(frames), frames, rt.state_for(spec)))
            rt.overlap(spec.name).worked(timer.last_s, len(frames))
            if len(results) != len(frames):
                raise RuntimeError(f"batch processor returned {len(results)} results for {len(frames)} frames")
    except Exception as exc:
        spent = [_retry_or_dead(task, rt, spec, ref, queues[ref.frame_id], exc) for ref in refs]
        return [(ref, "FAILURE", f"ProcessorFailed: dead-lettered after its last attempt: {exc!r}") if dead
                else (ref, "RETRY", repr(exc)) for ref, dead in zip(refs, spent)]
    done = []
    for ref, result in zip(refs, results):
        if isinstance(result, FrameRejected):
            _dead(rt, spec, ref, result.reason)
        else:
            done.append((ref, result))
    _publish(task, rt, spec, done, {"batches": 1, "batched_frames": len(frames), **timer.take()})
    return []

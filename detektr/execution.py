"""What a worker does with its tasks: fetch frames, decode, validate, run, publish or dead-letter.

`run_task` handles one frame, `run_batch` a list of frames (batched processors). Both retry a
failing processor by sending the frame again with a delay (exponential backoff) until its
attempts are spent, then dead-letter it with the exception. After a gating processor (motion)
has published, the frame goes on to the processors waiting on its gate, or they are counted as
gated out.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from . import keys
from .deadletter import add_dead_letter, dead_letter_fields
from .errors import FrameRejected
from .frame import Frame, FrameRef, check_image_bytes, decode_image
from .processor import ProcessorSpec
from .results import encode_result
from .router import celery_priority
from .runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)


def retry_delay_s(attempt: int, first_s: float, max_s: float) -> float:
    """Exponential backoff: first_s, 2*first_s, 4*first_s, ... capped at max_s (attempt counts from 0)."""
    return min(max_s, first_s * (2**attempt))


def _dead(rt: WorkerRuntime, spec: ProcessorSpec, reason: str, payload: Any) -> None:
    payload = payload if isinstance(payload, dict) else {}
    entry = dead_letter_fields(
        "process", reason, {k: v for k, v in payload.items() if k != "then"},
        frame_id=str(payload.get("frame_id") or "") or None,
        camera_id=str(payload.get("camera_id") or "") or None,
        processor=spec.name,
    )
    add_dead_letter(rt.redis, rt.settings.results.stream_maxlen, entry)


def _parse(rt: WorkerRuntime, spec: ProcessorSpec, payload: Any) -> FrameRef | None:
    if not isinstance(payload, dict):
        _dead(rt, spec, f"task payload is {type(payload).__name__}, not a frame reference", {})
        return None
    try:
        return FrameRef.model_validate(payload)
    except ValidationError as exc:
        _dead(rt, spec, f"task payload is not a frame reference: {exc.error_count()} errors", payload)
        return None


def frame_from_bytes(rt: WorkerRuntime, ref: FrameRef, data: bytes | None) -> Frame:
    """Check and decode a frame's bytes; FrameRejected if gone, oversized or undecodable."""
    if data is None:
        raise FrameRejected(
            f"frame bytes {ref.image_key!r} are gone (expired after {rt.settings.frames.ttl_s} s "
            "or never stored) before processing"
        )
    check_image_bytes(ref.format, data, ref.width, ref.height, rt.settings.frames)  # before any decoding
    return Frame(
        image=decode_image(ref.format, data, ref.width, ref.height),
        frame_id=ref.frame_id,
        camera_id=ref.camera_id,
        timestamp=ref.timestamp,
        priority=ref.priority,
        metadata=dict(ref.metadata or {}),
        traceparent=ref.traceparent,
    )


def _retry_or_dead(task: Any, rt: WorkerRuntime, spec: ProcessorSpec, ref: FrameRef, exc: Exception) -> None:
    """Send the frame again after a backoff delay, or dead-letter it once its attempts are spent."""
    limit = spec.max_retries if spec.max_retries is not None else rt.settings.worker.max_retries
    rt.redis.hincrby(keys.processor_stats(spec.name), "failed", 1)
    if ref.attempt < limit:
        delay = retry_delay_s(ref.attempt, rt.settings.worker.retry_backoff_s, rt.settings.worker.retry_backoff_max_s)
        log.warning("processor %s failed on %s (attempt %d), retrying in %.2fs: %r",
                    spec.name, ref.frame_id, ref.attempt + 1, delay, exc)
        again = ref.model_copy(update={"attempt": ref.attempt + 1}).model_dump(exclude_none=True)
        task.app.send_task(spec.task_name, args=[again], queue=spec.queue, countdown=delay,
                           priority=celery_priority(ref.priority))
        return
    log.error("processor %s failed on %s after %d attempts: %r", spec.name, ref.frame_id, ref.attempt + 1, exc)
    _dead(rt, spec, f"processor raised {type(exc).__name__}: {exc} (after {ref.attempt + 1} attempts)",
          ref.model_dump(exclude_none=True))


def _publish(task: Any, rt: WorkerRuntime, spec: ProcessorSpec, ref: FrameRef, result: Any) -> None:
    """Publish one result; then pass the frame through this processor's gate, if it has one."""
    try:
        result_json = encode_result(result)
    except (TypeError, ValueError) as exc:
        _dead(rt, spec, f"result is not JSON-serializable: {exc}", ref.model_dump(exclude_none=True))
        return
    extra: dict[str, str] = {}
    gate_open = True
    if spec.gate is not None and ref.then:
        try:
            gate_open = bool(spec.gate(result))
        except Exception as exc:  # a broken gate must not hide frames: let them through
            log.warning("gate of %s failed on %s (%r); letting the frame through", spec.name, ref.frame_id, exc)
        extra = {"gate": "open" if gate_open else "closed",
                 "gated": ",".join(follower.processor for follower in ref.then)}
    if not rt.publisher.publish(spec.name, spec.result_stream, ref, result_json, extra):
        log.info("result of %s for %s was already published; duplicate delivery ignored", spec.name, ref.frame_id)
        return
    if ref.then:
        _pass_gate(task, rt, spec, ref, gate_open)


def _pass_gate(task: Any, rt: WorkerRuntime, spec: ProcessorSpec, ref: FrameRef, gate_open: bool) -> None:
    pipe = rt.redis.pipeline(transaction=False)
    if gate_open:
        onward = ref.model_copy(update={"then": (), "attempt": 0}).model_dump(exclude_none=True)
        for follower in ref.then:
            task.app.send_task(keys.task_name(follower.processor), args=[onward], queue=follower.queue,
                               priority=celery_priority(ref.priority))
            pipe.hincrby(keys.processor_stats(follower.processor), "queued", 1)
            pipe.hincrby(keys.processor_stats(follower.processor), "gated_in", 1)
        pipe.hincrby(keys.camera_stats(ref.camera_id), "routed", len(ref.then))
    else:
        for follower in ref.then:
            pipe.hincrby(keys.processor_stats(follower.processor), "gated_out", 1)
        pipe.hincrby(keys.camera_stats(ref.camera_id), "gated_out", len(ref.then))
    pipe.execute()


def run_task(task: Any, spec: ProcessorSpec, payload: Any) -> None:
    """The body of every single-frame processor task."""
    rt = current_runtime()
    ref = _parse(rt, spec, payload)
    if ref is None:
        return
    try:
        frame = frame_from_bytes(rt, ref, rt.redis.get(ref.image_key))
        if spec.validate is not None:
            spec.validate(frame)
        state = rt.state_for(spec)
        result = spec.fn(frame) if spec.setup is None else spec.fn(frame, state)
    except FrameRejected as exc:
        _dead(rt, spec, exc.reason, payload)
        return
    except Exception as exc:  # a processor bug or a transient failure: retry, then dead-letter
        _retry_or_dead(task, rt, spec, ref, exc)
        return
    _publish(task, rt, spec, ref, result)


def run_batch(task: Any, spec: ProcessorSpec, payloads: list[Any]) -> None:
    """The body of a batched processor's task: one call of the function for the whole batch."""
    rt = current_runtime()
    refs = [ref for ref in (_parse(rt, spec, payload) for payload in payloads) if ref is not None]
    if not refs:
        return
    frames: list[Frame] = []
    kept: list[FrameRef] = []
    for ref, data in zip(refs, rt.redis.mget([ref.image_key for ref in refs])):
        try:
            frame = frame_from_bytes(rt, ref, data)
            if spec.validate is not None:
                spec.validate(frame)
        except FrameRejected as exc:
            _dead(rt, spec, exc.reason, ref.model_dump(exclude_none=True))
            continue
        frames.append(frame)
        kept.append(ref)
    if not frames:
        return
    try:
        state = rt.state_for(spec)
        results = spec.fn(frames) if spec.setup is None else spec.fn(frames, state)
        results = list(results)
        if len(results) != len(frames):
            raise RuntimeError(f"batch processor returned {len(results)} results for {len(frames)} frames")
    except Exception as exc:
        for ref in kept:
            _retry_or_dead(task, rt, spec, ref, exc)
        return
    stats = rt.redis.pipeline(transaction=False)
    stats.hincrby(keys.processor_stats(spec.name), "batches", 1)
    stats.hincrby(keys.processor_stats(spec.name), "batched_frames", len(frames))
    stats.execute()
    for ref, result in zip(kept, results):
        if isinstance(result, FrameRejected):
            _dead(rt, spec, result.reason, ref.model_dump(exclude_none=True))
        else:
            _publish(task, rt, spec, ref, result)

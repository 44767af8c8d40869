"""What a worker does with one task: fetch the frame, decode, validate, run, publish or dead-letter."""

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
from .runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)


def retry_delay_s(retries: int, first_s: float, max_s: float) -> float:
    """Exponential backoff: first_s, 2*first_s, 4*first_s, ... capped at max_s."""
    return min(max_s, first_s * (2**retries))


def _dead(rt: WorkerRuntime, spec: ProcessorSpec, reason: str, payload: dict[str, Any]) -> None:
    entry = dead_letter_fields(
        "process", reason, payload,
        frame_id=str(payload.get("frame_id") or "") or None,
        camera_id=str(payload.get("camera_id") or "") or None,
        processor=spec.name,
    )
    add_dead_letter(rt.redis, rt.settings.results.stream_maxlen, entry)


def load_frame(rt: WorkerRuntime, ref: FrameRef) -> Frame:
    """Fetch a frame's bytes by key and decode them; FrameRejected if gone or undecodable."""
    data = rt.redis.get(ref.image_key)
    if data is None:
        raise FrameRejected(
            f"frame bytes {ref.image_key!r} are gone (expired after {rt.settings.frames.ttl_s} s "
            "or never stored) before processing"
        )
    check_image_bytes(ref.format, data, ref.width, ref.height, rt.settings.frames)  # before any decoding
    image = decode_image(ref.format, data, ref.width, ref.height)
    return Frame(
        image=image,
        frame_id=ref.frame_id,
        camera_id=ref.camera_id,
        timestamp=ref.timestamp,
        priority=ref.priority,
        metadata=dict(ref.metadata or {}),
        traceparent=ref.traceparent,
    )


def run_task(task: Any, spec: ProcessorSpec, payload: dict[str, Any]) -> None:
    """The body of every processor task."""
    rt = current_runtime()
    if not isinstance(payload, dict):
        _dead(rt, spec, f"task payload is {type(payload).__name__}, not a frame reference", {})
        return
    try:
        ref = FrameRef.model_validate(payload)
    except ValidationError as exc:
        _dead(rt, spec, f"task payload is not a frame reference: {exc.error_count()} errors", payload)
        return
    try:
        frame = load_frame(rt, ref)
        if spec.validate is not None:
            spec.validate(frame)
        state = rt.state_for(spec)
        result = spec.fn(frame) if spec.setup is None else spec.fn(frame, state)
        result_json = encode_result(result)
    except FrameRejected as exc:
        _dead(rt, spec, exc.reason, payload)
        return
    except Exception as exc:  # a processor bug or a transient failure: retry, then dead-letter
        attempts = task.request.retries + 1
        limit = spec.max_retries if spec.max_retries is not None else rt.settings.worker.max_retries
        rt.redis.hincrby(keys.processor_stats(spec.name), "failed", 1)
        if task.request.retries < limit:
            delay = retry_delay_s(
                task.request.retries, rt.settings.worker.retry_backoff_s, rt.settings.worker.retry_backoff_max_s
            )
            log.warning("processor %s failed on %s (attempt %d), retrying in %.2fs: %r",
                        spec.name, ref.frame_id, attempts, delay, exc)
            raise task.retry(exc=exc, countdown=delay, max_retries=limit) from exc
        log.exception("processor %s failed on %s after %d attempts", spec.name, ref.frame_id, attempts)
        _dead(rt, spec, f"processor raised {type(exc).__name__}: {exc} (after {attempts} attempts)", payload)
        return
    if not rt.publisher.publish(spec.name, spec.result_stream, ref, result_json):
        log.info("result of %s for %s was already published; duplicate delivery ignored", spec.name, ref.frame_id)

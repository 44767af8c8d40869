"""Fetching and decoding a task's frames ahead of the processor, in a helper thread, in order.

A task's frames are fetched a few per round trip (MGET) and decoded up to `decode_ahead` frames
early in one helper thread per worker thread, while the processor works on the frame before:
Redis round trips and JPEG decoding (both release the GIL) then overlap with detection.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import FrameRejected
from .frame import Frame, FrameRef, check_image_bytes, decode_image
from .runtime import WorkerRuntime

T = TypeVar("T")

FETCH_FRAMES = 16
"""Frames whose bytes a worker fetches in one round trip."""


def _fetch(
    rt: WorkerRuntime, refs: list[FrameRef], per_round_trip: int = FETCH_FRAMES
) -> Iterator[tuple[FrameRef, bytes | None]]:
    """Each frame reference with its bytes, fetched `per_round_trip` frames at a time (MGET).

    One round trip per few frames, and never a whole long task's bytes in memory at once.
    """
    for start in range(0, len(refs), per_round_trip):
        chunk = refs[start : start + per_round_trip]
        yield from zip(chunk, rt.redis.mget([ref.image_key for ref in chunk]))


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
        gate_result=ref.gate_result,
    )


_helpers = threading.local()
_END = object()


def _helper() -> ThreadPoolExecutor:
    """This thread's own helper thread (one: what it runs, it runs in order)."""
    if not hasattr(_helpers, "executor"):
        _helpers.executor = ThreadPoolExecutor(1, thread_name_prefix="detektr-ahead")
    return _helpers.executor


def run_ahead(items: Iterator[T], ahead: int) -> Iterator[T]:
    """The items of a lazy iterator, in order, each produced in a helper thread up to `ahead` items early.

    What producing an item does (a Redis round trip, JPEG decoding: both release the GIL) then
    overlaps with what the caller does with the one before. At most `ahead` produced items wait.
    An exception raised while producing an item is raised here, when that item's turn comes.
    """
    if ahead < 1:
        yield from items
        return
    helper = _helper()
    pending = deque(helper.submit(next, items, _END) for _ in range(ahead))
    try:
        while (item := pending.popleft().result()) is not _END:
            pending.append(helper.submit(next, items, _END))
            yield item
    finally:  # an abandoned task: produce nothing more for it
        for future in pending:
            future.cancel()


def frames_ahead(decode_ahead: int, batch_size: int) -> int:
    """How many frames to decode ahead: the setting, and at least one batch for a batched processor (0: off)."""
    return max(decode_ahead, batch_size) if decode_ahead else 0


def decoded_frames(
    rt: WorkerRuntime, refs: list[FrameRef], ahead: int, per_round_trip: int = FETCH_FRAMES
) -> Iterator[tuple[FrameRef, Frame | FrameRejected]]:
    """Each frame reference, in order, with its decoded frame or the reason it was rejected.

    The frames are fetched and decoded up to `ahead` frames early in a helper thread, while the
    processor works on the one before; never more than the frames after the first (a one-frame
    task has nothing to overlap: decoded here).
    """

    def decode(ref: FrameRef, data: bytes | None) -> tuple[FrameRef, Frame | FrameRejected]:
        try:
            return ref, frame_from_bytes(rt, ref, data)
        except FrameRejected as exc:
            return ref, exc

    frames = (decode(ref, data) for ref, data in _fetch(rt, refs, per_round_trip))
    return run_ahead(frames, min(ahead, len(refs) - 1))

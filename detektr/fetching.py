"""Fetching and decoding a task's frames ahead of the processor, in a helper thread, in order.

A task's frames are fetched a few per round trip (MGET) and decoded up to `decode_ahead` frames
early in one helper thread per worker thread, while the processor works on the frame before:
Redis round trips and JPEG decoding (both release the GIL) then overlap with detection. Handing
each frame between threads has a cost of its own, so a processor whose work on a frame is shorter
than that gains nothing from it: such frames are decoded in the worker's own thread
(`Overlap`, from the times of the processor's last frames in this process).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import FrameRejected
from .frame import Frame, FrameRef, check_image_bytes, decode_image

if TYPE_CHECKING:
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
        yield from zip(chunk, _fetch_bytes(rt.redis, chunk))


def _fetch_bytes(redis: Any, refs: list[FrameRef]) -> list[bytes | None]:
    """The bytes of each frame, in one round trip: MGET for keys, XRANGE for frames left in their entries."""
    if all(ref.image_entry is None for ref in refs):
        return redis.mget([ref.image_key for ref in refs])
    pipe = redis.pipeline(transaction=False)
    for ref in refs:
        if ref.image_entry is None:
            pipe.get(ref.image_key)
        else:
            pipe.xrange(ref.image_entry.stream, ref.image_entry.id, ref.image_entry.id)
    return [_image_in(reply) if ref.image_entry is not None else _bytes_in(reply)
            for ref, reply in zip(refs, pipe.execute(raise_on_error=False))]


def _bytes_in(reply: Any) -> bytes | None:
    return reply if isinstance(reply, bytes) else None  # a key of another type: gone, as MGET says


def _image_in(reply: Any) -> bytes | None:
    """The `image` field of the one entry XRANGE returned (None when the entry is gone)."""
    if not isinstance(reply, list) or not reply:
        return None
    return _bytes_in(reply[0][1].get(b"image"))


def frame_from_bytes(rt: WorkerRuntime, ref: FrameRef, data: bytes | None) -> Frame:
    """Check and decode a frame's bytes; FrameRejected if gone, oversized or undecodable."""
    if data is None:
        raise FrameRejected(
            f"{ref.describe_bytes()}: the bytes are gone (expired after {rt.settings.frames.ttl_s} s, trimmed "
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


OVERLAP_WORTH_S = 0.0002
"""Decoding ahead pays only when decoding a frame and the processor's work on it both take at least this
long: what overlapping saves is the shorter of the two, and handing a frame from the helper thread to
the worker's costs about 0.05 ms of CPU on its own (`detektr bench`, `sample` with 640x480 frames)."""


def overlap_pays(decode_s: float | None, work_s: float | None) -> bool:
    """Whether decoding ahead is worth its cost, from a frame's decode time and the processor's work on
    one (seconds; None while not measured yet: then it is, as configured)."""
    if decode_s is None or work_s is None:
        return True
    return min(decode_s, work_s) >= OVERLAP_WORTH_S


class Overlap:
    """One processor's recent decode and work times per frame in this process: the medians of the last
    `WINDOW` frames.

    Medians, not averages: the times are wall-clock times, and on busy cores a frame's decode or work
    now and then waits a scheduler slice (milliseconds) for a core. An average that took those in
    would switch a cheap processor to decoding ahead, and its hand-overs cost, for the next tasks.
    """

    WINDOW = 32
    """Frames (or batches) whose times the medians are taken over."""

    def __init__(self) -> None:
        self._decode: deque[float] = deque(maxlen=self.WINDOW)
        self._work: deque[float] = deque(maxlen=self.WINDOW)

    @property
    def decode_s(self) -> float | None:
        return statistics.median(self._decode) if self._decode else None

    @property
    def work_s(self) -> float | None:
        return statistics.median(self._work) if self._work else None

    def decoded(self, seconds: float) -> None:
        self._decode.append(seconds)

    def worked(self, seconds: float, frames: int) -> None:
        self._work.append(seconds / max(1, frames))

    def ahead(self, decode_ahead: int, batch_size: int) -> int:
        """Frames to decode ahead for the next task (`frames_ahead`), or 0 when overlapping does not pay."""
        return frames_ahead(decode_ahead, batch_size) if overlap_pays(self.decode_s, self.work_s) else 0


def decoded_frames(
    rt: WorkerRuntime, refs: list[FrameRef], ahead: int, per_round_trip: int = FETCH_FRAMES,
    overlap: Overlap | None = None,
) -> Iterator[tuple[FrameRef, Frame | FrameRejected]]:
    """Each frame reference, in order, with its decoded frame or the reason it was rejected.

    The frames are fetched and decoded up to `ahead` frames early in a helper thread, while the
    processor works on the one before; never more than the frames after the first (a one-frame
    task has nothing to overlap: decoded here).
    """

    def decode(ref: FrameRef, data: bytes | None) -> tuple[FrameRef, Frame | FrameRejected]:
        started = time.perf_counter()
        try:
            frame = frame_from_bytes(rt, ref, data)
        except FrameRejected as exc:
            return ref, exc
        if overlap is not None:
            overlap.decoded(time.perf_counter() - started)
        return ref, frame

    frames = (decode(ref, data) for ref, data in _fetch(rt, refs, per_round_trip))
    return run_ahead(frames, min(ahead, len(refs) - 1))

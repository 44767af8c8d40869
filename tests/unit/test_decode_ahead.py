"""A worker fetches and decodes a task's frames ahead, in a helper thread, in order and bounded."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import redis

from detektr import fetching
from detektr.config import load_settings
from detektr.errors import FrameRejected
from detektr.frame import Frame, FrameRef
from detektr.runtime import WorkerRuntime


@pytest.fixture()
def runtime(module_db_url: str) -> WorkerRuntime:
    return WorkerRuntime(load_settings(redis_url=module_db_url), redis.Redis.from_url(module_db_url))


def stored_frames(rt: WorkerRuntime, count: int, missing: tuple[int, ...] = ()) -> list[FrameRef]:
    """`count` JPEG frames whose first pixel row says their number; those in `missing` are not stored."""
    refs = []
    for i in range(count):
        image = np.full((32, 48, 3), i * 6, np.uint8)
        key = f"unit:decode-ahead:{i}"
        if i not in missing:
            rt.redis.set(key, cv2.imencode(".jpg", image)[1].tobytes())
        refs.append(FrameRef(frame_id=f"f{i}", camera_id="c", timestamp=float(i), format="jpeg",
                             image_key=key, ingested_at=0.0))
    return refs


def test_frames_come_in_order_with_a_missing_one_rejected_in_its_place(runtime: WorkerRuntime):
    refs = stored_frames(runtime, 40, missing=(7,))
    out = list(fetching.decoded_frames(runtime, refs, ahead=4, per_round_trip=5))
    assert [ref.frame_id for ref, _ in out] == [f"f{i}" for i in range(40)]
    assert isinstance(out[7][1], FrameRejected) and "gone" in out[7][1].reason
    levels = [int(frame.image[0, 0, 0]) for _, frame in out if isinstance(frame, Frame)]
    assert all(abs(level - i * 6) <= 2 for level, i in zip(levels, [i for i in range(40) if i != 7]))


def test_decoding_runs_in_a_helper_thread_and_at_most_ahead_frames_wait(runtime: WorkerRuntime, monkeypatch):
    refs = stored_frames(runtime, 30)
    decoded_in: set[str] = set()
    decoded = 0
    real = fetching.frame_from_bytes

    def counting(rt, ref, data):
        nonlocal decoded
        decoded_in.add(threading.current_thread().name)
        decoded += 1
        return real(rt, ref, data)

    monkeypatch.setattr(fetching, "frame_from_bytes", counting)
    taken = 0
    for _ in fetching.decoded_frames(runtime, refs, ahead=3):
        taken += 1
        time.sleep(0.005)  # a slow processor: the helper has every chance to run further ahead
        assert decoded <= taken + 3  # never more than `ahead` decoded frames beyond those handed out
    assert taken == decoded == 30
    assert decoded_in and threading.current_thread().name not in decoded_in


def test_a_one_frame_task_is_decoded_in_the_callers_thread(runtime: WorkerRuntime, monkeypatch):
    refs = stored_frames(runtime, 1)
    threads = []
    real = fetching.frame_from_bytes
    monkeypatch.setattr(fetching, "frame_from_bytes",
                        lambda rt, ref, data: threads.append(threading.current_thread()) or real(rt, ref, data))
    assert len(list(fetching.decoded_frames(runtime, refs, ahead=4))) == 1
    assert threads == [threading.current_thread()]


def test_a_redis_error_while_fetching_ahead_fails_the_task(runtime: WorkerRuntime, monkeypatch):
    refs = stored_frames(runtime, 20)
    calls = 0
    real_mget = runtime.redis.mget

    def failing_mget(keys):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise redis.ConnectionError("server went away")
        return real_mget(keys)

    monkeypatch.setattr(runtime.redis, "mget", failing_mget)
    with pytest.raises(redis.ConnectionError):
        list(fetching.decoded_frames(runtime, refs, ahead=4, per_round_trip=5))


def test_a_frame_carries_the_gate_result_of_its_reference(runtime: WorkerRuntime):
    (ref,) = stored_frames(runtime, 1)
    ref = ref.model_copy(update={"gate_result": {"motion": True, "boxes": [[1, 2, 3, 4]]}})
    ((_, frame),) = list(fetching.decoded_frames(runtime, [ref], ahead=0))
    assert frame.gate_result == {"motion": True, "boxes": [[1, 2, 3, 4]]}
    ((_, plain),) = list(fetching.decoded_frames(runtime, stored_frames(runtime, 1), ahead=0))
    assert plain.gate_result is None


@pytest.mark.parametrize(("decode_s", "work_s", "pays"), [
    (None, None, True),  # nothing measured yet: as configured
    (0.001, None, True),
    (0.001, 0.00002, False),  # a processor that reads a few numbers off the image
    (0.00005, 0.01, False),  # a tiny frame before a heavy detector: nothing to overlap either
    (0.001, 0.0002, True),
    (0.002, 0.03, True),
])
def test_decoding_ahead_pays_only_when_decode_and_work_both_take_long_enough(decode_s, work_s, pays):
    assert fetching.overlap_pays(decode_s, work_s) is pays


def test_a_processor_with_little_work_gets_its_frames_decoded_in_turn_and_a_slow_one_ahead():
    quick, slow = fetching.Overlap(), fetching.Overlap()
    assert quick.ahead(4, 1) == 4  # before any frame: as configured
    for _ in range(20):
        quick.decoded(0.0009), slow.decoded(0.0009)
        quick.worked(0.00002, 1), slow.worked(0.016, 8)  # a batch of 8 at 2 ms a frame
    assert quick.ahead(4, 1) == 0 and slow.ahead(4, 8) == 8
    assert slow.ahead(0, 8) == 0  # off is off
    for _ in range(60):  # the quick one's frames grow heavy: it goes back to decoding ahead
        quick.worked(0.005, 1)
    assert quick.ahead(4, 1) == 4


def test_a_quick_processor_keeps_decoding_in_turn_when_some_frames_wait_for_a_busy_core():
    """Wall-clock times on busy cores: now and then a frame waits a scheduler slice (4 ms here)."""
    overlap = fetching.Overlap()
    for frame in range(200):
        overlap.decoded(0.004 if frame % 7 == 3 else 0.0009)
        overlap.worked(0.004 if frame % 5 == 2 else 0.00007, 1)
        assert overlap.ahead(4, 1) == 0, frame


def test_a_task_run_records_decode_and_work_times_for_its_processor(runtime: WorkerRuntime):
    overlap = runtime.overlap("unit-overlap")
    refs = stored_frames(runtime, 6)
    out = list(fetching.decoded_frames(runtime, refs, ahead=0, overlap=overlap))
    assert len(out) == 6 and overlap.decode_s is not None and overlap.decode_s > 0
    assert runtime.overlap("unit-overlap") is overlap


def test_bytes_left_in_their_input_entry_are_read_from_it_with_keys_in_the_same_round_trip(runtime: WorkerRuntime):
    from detektr.frame import EntryRef

    stream = "unit:decode-ahead:input"
    refs = []
    for i in range(6):
        data = cv2.imencode(".jpg", np.full((32, 48, 3), i * 40, np.uint8))[1].tobytes()
        if i % 2:
            entry_id = runtime.redis.xadd(stream, {"frame_id": f"e{i}", "image": data}).decode()
            where = {"image_entry": EntryRef(stream=stream, id=entry_id)}
            if i == 5:
                runtime.redis.xdel(stream, entry_id)  # settled or trimmed before this worker came to it
        else:
            runtime.redis.set(f"unit:decode-ahead:k{i}", data)
            where = {"image_key": f"unit:decode-ahead:k{i}"}
        refs.append(FrameRef(frame_id=f"e{i}", camera_id="c", timestamp=1.0, format="jpeg", ingested_at=0.0, **where))
    out = list(fetching.decoded_frames(runtime, refs, ahead=2, per_round_trip=4))
    assert [ref.frame_id for ref, _ in out] == [f"e{i}" for i in range(6)]
    for i, (_, frame) in enumerate(out[:5]):
        assert isinstance(frame, Frame) and abs(int(frame.image[0, 0, 0]) - i * 40) <= 2
    assert isinstance(out[5][1], FrameRejected) and "gone" in out[5][1].reason and stream in out[5][1].reason

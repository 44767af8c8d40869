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

"""The capture's decisions, without I/O: backoff, sizes, rate caps, the latest-frame-wins slot, ids, redaction."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from detektr.capture import (
    Captured,
    FrameSlot,
    RateLimiter,
    backoff_s,
    new_traceparent,
    output_size,
    scrub,
    stream_id_after,
)
from detektr.frame import FrameEntry


def test_backoff_doubles_from_the_initial_wait_and_is_capped():
    waits = [backoff_s(attempt, 0.5, 10.0) for attempt in range(8)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff_s(10_000, 0.5, 10.0) == 10.0  # no overflow after a very long outage


@pytest.mark.parametrize(("source", "width", "height", "expected"), [
    ((1280, 720), None, None, (1280, 720)),
    ((1280, 720), 640, None, (640, 360)),
    ((1280, 720), None, 180, (320, 180)),
    ((1280, 720), 100, 100, (100, 100)),
    ((1920, 1080), 641, None, (641, 361)),
])
def test_output_size_keeps_the_aspect_ratio_unless_both_sides_are_given(source, width, height, expected):
    assert output_size(*source, width, height) == expected


def test_stream_ids_compare_by_time_then_sequence():
    assert stream_id_after("1700000000001-0", "1700000000000-5")
    assert stream_id_after("1700000000000-10", "1700000000000-9")  # numerically, not as text
    assert not stream_id_after("1700000000000-1", "1700000000000-1")
    assert stream_id_after("5-0", "0-0")


def test_rate_limiter_thins_a_30fps_source_to_10fps():
    limiter = RateLimiter(10)
    admitted = [i for i in range(90) if limiter.admit(i / 30)]  # three seconds of a 30 fps camera
    assert len(admitted) == 30
    assert all(b - a == 3 for a, b in zip(admitted, admitted[1:], strict=False))


def test_rate_limiter_paces_without_dropping():
    limiter = RateLimiter(4)
    now, sent = 0.0, 0
    for _ in range(8):  # a file that could be read instantly is sent at 4 frames/s
        now += limiter.delay_s(now)
        assert limiter.admit(now)
        sent += 1
    assert sent == 8 and now == pytest.approx(7 * 0.25)


def test_rate_limiter_without_a_cap_admits_everything():
    limiter = RateLimiter(None)
    assert all(limiter.admit(0.0) for _ in range(100)) and limiter.delay_s(0.0) == 0


def _frame(index: int) -> Captured:
    return Captured(np.zeros((2, 2, 3), np.uint8), float(index), index)


def test_live_slot_keeps_the_newest_frame_and_reports_what_it_replaced():
    slot, abandoned = FrameSlot(drop_oldest=True), threading.Event()
    replaced = [slot.put(_frame(i), abandoned) for i in range(5)]
    assert replaced == [False, True, True, True, True]  # four frames skipped, never queued
    assert slot.take(0).index == 4
    assert slot.take(0) is None


def test_file_slot_makes_the_reader_wait_for_its_turn():
    slot, abandoned = FrameSlot(drop_oldest=False), threading.Event()
    slot.put(_frame(0), abandoned)
    second_put = threading.Thread(target=slot.put, args=(_frame(1), abandoned))
    second_put.start()
    second_put.join(0.3)
    assert second_put.is_alive()  # blocked: frame 0 has not been taken
    assert slot.take(1).index == 0
    second_put.join(5)
    assert not second_put.is_alive()
    assert slot.take(1).index == 1


def test_abandoning_releases_a_reader_blocked_on_the_slot():
    slot, abandoned = FrameSlot(drop_oldest=False), threading.Event()
    slot.put(_frame(0), abandoned)
    blocked = threading.Thread(target=slot.put, args=(_frame(1), abandoned))
    blocked.start()
    abandoned.set()
    blocked.join(5)
    assert not blocked.is_alive()
    assert slot.take(0).index == 0  # the abandoned reader's frame was not slipped in


def test_traceparents_are_valid_w3c_headers_and_fresh():
    parents = {new_traceparent() for _ in range(1000)}
    assert len(parents) == 1000
    for parent in list(parents)[:20]:
        entry = FrameEntry(frame_id="f1", camera_id="c", timestamp=1.0, image_key="k", traceparent=parent)
        assert entry.traceparent == parent
        version, trace_id, span_id, flags = parent.split("-")
        assert (version, flags, len(trace_id), len(span_id)) == ("00", "01", 32, 16)


def test_scrub_removes_credentials_from_any_text():
    source = "rtsp://admin:hunter2@10.0.0.5:554/Streaming/101"
    text = f"OpenCV: cannot read {source}; retry with password hunter2 for admin"
    cleaned = scrub(text, source)
    assert "hunter2" not in cleaned and "admin" not in cleaned
    assert "rtsp://***@10.0.0.5:554/Streaming/101" in cleaned
    assert scrub("file /a/b.mp4 ended", "/a/b.mp4") == "file /a/b.mp4 ended"


def test_scrub_removes_credentials_of_the_query_string():
    source = "rtsp://10.0.0.6/cam/realmonitor?channel=1&user=operator&password=hunter3"
    cleaned = scrub(f"cannot open {source}: the password hunter3 was refused", source)
    assert "hunter3" not in cleaned and "operator" not in cleaned
    assert "rtsp://10.0.0.6/cam/realmonitor?channel=1&user=***&password=***" in cleaned

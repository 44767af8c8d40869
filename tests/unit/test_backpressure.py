"""Backpressure decisions, as plain code: levels, what a shedding processor keeps, how much ingest reads."""

from __future__ import annotations

import pytest

from detektr.backpressure import level, queue_limit, read_count, replaces
from detektr.holding import FrameHolder


@pytest.mark.parametrize(("depth", "expected"), [(0, "normal"), (59, "normal"), (60, "low"), (80, "high"),
                                                 (94, "high"), (95, "critical"), (500, "critical")])
def test_levels_are_shares_of_the_limit(depth, expected):
    assert level(depth, queue_limit(10, 10)) == expected


def test_a_newer_frame_replaces_the_least_urgent_held_ones_first():
    assert not replaces(0, "low") and not replaces(0, "normal")
    assert replaces(0, "high") and not replaces(3, "high")
    assert replaces(0, "critical") and replaces(9, "critical")


def test_the_holder_keeps_each_cameras_newest_frame_for_a_shedding_processor():
    holder = FrameHolder(frames_per_task=64, max_hold_ms=100)

    def frame(camera: str, number: int) -> dict:
        return {"camera_id": camera, "frame_id": f"{camera}-{number}"}

    assert holder.hold("p", "p", 0, frame("a", 1), "e1") == ([], [])
    assert holder.hold("p", "p", 0, frame("b", 1), "e1") == ([], [])
    replaced, finished = holder.hold("p", "p", 5, frame("a", 2), "e2", level="high")
    assert replaced == [frame("a", 1)] and finished == []  # e1 still has b's frame held
    assert holder.hold("p", "p", 0, frame("a", 3), "e3", level="high") == ([], [])  # the urgent a-2 stays
    replaced, finished = holder.hold("p", "p", 0, frame("b", 2), "e4", level="critical")
    assert replaced == [frame("b", 1)] and finished == ["e1"]  # e1's last frame is gone: acknowledge it
    replaced, _ = holder.hold("p", "p", 0, frame("a", 4), "e5", level="critical")
    assert sorted(f["frame_id"] for f in replaced) == ["a-2", "a-3"]
    assert holder.holds("e5") and not holder.holds("e2") and not holder.holds("e1")


def test_a_pausing_processor_slows_then_stops_reading():
    policies = {"archive": "pause", "motion": "shed"}
    assert read_count(64, {"archive": "low", "motion": "critical"}, policies) == 64
    assert read_count(64, {"archive": "high"}, policies) == 16
    assert read_count(64, {"archive": "critical"}, policies) == 0


def test_a_queued_tasks_age_is_read_from_its_frames_and_only_overdue_tasks_move(module_db_url):
    import base64
    import json

    import redis

    from detektr.aging import overdue, promote_overdue, task_ingested_at
    from detektr.keys import celery_queue_lists

    def message(*ingested_at: float) -> str:
        body = json.dumps([[[{"frame_id": "f", "ingested_at": t} for t in ingested_at]], {}, {}])
        return json.dumps({"body": base64.b64encode(body.encode()).decode(),
                           "properties": {"body_encoding": "base64"}})

    assert task_ingested_at(message(5.0, 3.0)) == 3.0 and task_ingested_at("not json") is None
    assert overdue(3.0, 14.0, 10) and not overdue(3.0, 12.0, 10) and not overdue(None, 99.0, 10)
    client = redis.Redis.from_url(module_db_url)
    urgent, calm = celery_queue_lists("aging")[0], celery_queue_lists("aging")[9]
    client.lpush(calm, message(1.0), message(2.0), message(50.0))  # the oldest is at the right end
    client.lpush(urgent, message(60.0))
    assert promote_overdue(client, "aging", aging_s=10, now=20.0) == 2
    assert [task_ingested_at(m) for m in client.lrange(urgent, 0, -1)] == [60.0, 1.0, 2.0]
    assert client.llen(calm) == 1

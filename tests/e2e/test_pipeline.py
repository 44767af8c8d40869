"""End to end: real Valkey, real `celery -A detektr worker` processes, real `detektr ingest`."""

from __future__ import annotations

import base64
import time
from collections import Counter

import pytest

from detektr import keys
from tests.conftest import Cluster, wait_for
from tests.e2e.util import dead_letters, jpeg, producer, results

pytestmark = pytest.mark.e2e

SHARED = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module", autouse=True)
def running(cluster: Cluster) -> Cluster:
    for name in SHARED:
        cluster.worker(name, concurrency=1)
    cluster.worker("sample", concurrency=1)
    cluster.worker("flaky", concurrency=1)
    cluster.worker("plodder", concurrency=1)
    cluster.ingest()
    cluster.wait_live(*SHARED, "sample", "flaky", "plodder")
    return cluster


def shared_results(client) -> list[dict]:
    return [entry for name in SHARED for entry in results(client, keys.default_result_stream(name))]


def test_hundred_frames_from_two_cameras_get_one_result_each_spread_over_three_processors(running):
    client = running.redis
    frames = [("cam01" if i % 2 else "cam02", jpeg(seed=i), {"capabilities": ["shared"]}) for i in range(100)]
    sent = producer(client).add_many(frames)

    wait_for(lambda: len(shared_results(client)) >= 100, timeout_s=60, message="100 results")
    got = shared_results(client)
    per_frame = Counter(entry["frame_id"] for entry in got)
    assert set(per_frame) == set(sent)
    assert set(per_frame.values()) == {1}, "a frame got more than one result"
    per_processor = Counter(entry["processor"] for entry in got)
    assert all(per_processor[name] > 20 for name in SHARED), per_processor
    entry = got[0]
    assert {"frame_id", "camera_id", "processor", "result", "captured_at", "processed_at", "latency_ms"} <= set(entry)
    assert entry["result"]["who"] == entry["processor"]
    assert entry["result"]["width"] == 160 and entry["result"]["height"] == 120
    assert float(entry["latency_ms"]) >= 0


def test_one_frame_fans_out_to_two_capabilities(running):
    client = running.redis
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    frame_id = producer(client).add("cam03", jpeg(seed=7), capabilities=["shared", "sample_processing"],
                                    traceparent=traceparent)

    def mine(stream):
        return [e for e in results(client, stream) if e["frame_id"] == frame_id]

    wait_for(lambda: mine("sample:results") and [s for s in SHARED if mine(f"results:{s}")], message="fan-out")
    sample = mine("sample:results")
    assert len(sample) == 1
    assert sample[0]["traceparent"] == traceparent
    assert set(sample[0]["result"]) >= {"width", "height", "mean_bgr", "std_bgr", "brightness"}
    assert sum(len(mine(f"results:{s}")) for s in SHARED) == 1


def test_processors_from_a_user_module_are_discovered_and_advertised(running):
    from detektr.registry import read_heartbeats

    advertised = {p["name"]: p for beat in read_heartbeats(running.redis, 3) for p in beat["processors"]}
    assert {"alpha", "beta", "gamma", "flaky", "sample"} <= set(advertised)
    assert advertised["alpha"]["capabilities"] == ["shared"]
    assert advertised["sample"]["result_stream"] == "sample:results"


def test_malformed_entries_are_dead_lettered_with_reasons_while_good_frames_flow(running):
    client = running.redis
    stream = "frames:capture"
    good = jpeg(seed=3)
    stamp = {"timestamp": "1700000000"}
    bad_entries = {
        "missing-camera": {"frame_id": "bad-1", **stamp, "image": good},
        "not-a-jpeg": {"frame_id": "bad-2", "camera_id": "camX", **stamp, "image": b"\x00garbage" * 50},
        "truncated": {"frame_id": "bad-3", "camera_id": "camX", **stamp, "image": good[: len(good) // 2]},
        "wrong-priority": {"frame_id": "bad-4", "camera_id": "camX", **stamp, "image": good,
                           "priority": "urgent"},
        "bad-timestamp": {"frame_id": "bad-5", "camera_id": "camX", "timestamp": "yesterday", "image": good},
        "two-images": {"frame_id": "bad-6", "camera_id": "camX", **stamp, "image": good,
                       "image_data": base64.b64encode(good)},
        "raw-wrong-size": {"frame_id": "bad-7", "camera_id": "camX", **stamp, "format": "raw",
                           "width": "10", "height": "10", "image": b"\x00" * 10},
        "missing-key": {"frame_id": "bad-8", "camera_id": "camX", "timestamp": "1700000000",
                        "image_key": "nowhere:frame"},
        "unknown-capability": {"frame_id": "bad-9", "camera_id": "camX", **stamp, "image": good,
                               "capabilities": "teleportation"},
        "bad-metadata": {"frame_id": "bad-10", "camera_id": "camX", **stamp, "image": good,
                         "metadata": "{not json"},
        "always-fails": {"frame_id": "bad-11", "camera_id": "camX", **stamp, "image": good,
                         "capabilities": "flaky", "metadata": '{"always_fail": true}'},
    }
    good_ids = []
    for i, (label, fields) in enumerate(bad_entries.items()):
        client.xadd(stream, fields)
        good_ids.append(producer(client).add("cam04", jpeg(seed=100 + i), capabilities=["sample_processing"],
                                             frame_id=f"good-{i}"))
    # A producer that cannot send binary sends base64 in image_data: accepted.
    client.xadd(stream, {"frame_id": "good-b64", "camera_id": "cam04", "timestamp": "2026-11-22T10:00:00Z",
                         "image_data": base64.b64encode(good), "capabilities": "sample_processing"})
    good_ids.append("good-b64")

    def dead_by_frame():
        return {d.get("frame_id", d.get("original.frame_id")): d for d in dead_letters(client)}

    wait_for(lambda: len(dead_by_frame()) >= len(bad_entries), timeout_s=60, message="all dead letters")
    dead = dead_by_frame()
    expect = {
        "bad-1": ("ingest", "camera_id"),
        "bad-2": ("ingest", "not a JPEG"),
        "bad-3": ("ingest", "truncated"),
        "bad-4": ("ingest", "priority"),
        "bad-5": ("ingest", "timestamp"),
        "bad-6": ("ingest", "exactly one of image"),
        "bad-7": ("ingest", "raw image"),
        "bad-8": ("ingest", "does not exist"),
        "bad-9": ("route", "teleportation"),
        "bad-10": ("ingest", "metadata"),
        "bad-11": ("process", "RuntimeError"),
    }
    for frame_id, (stage, words) in expect.items():
        assert frame_id in dead, f"{frame_id} not dead-lettered"
        assert dead[frame_id]["stage"] == stage, dead[frame_id]
        assert words in dead[frame_id]["reason"], dead[frame_id]["reason"]
    assert dead["bad-11"]["processor"] == "flaky" and "after 3 attempts" in dead["bad-11"]["reason"]
    assert dead["bad-2"]["original.image"].endswith("bytes elided>")

    wait_for(lambda: {e["frame_id"] for e in results(client, "sample:results")} >= set(good_ids),
             timeout_s=60, message="good frames processed")
    assert running.processes["ingest"].poll() is None, "ingest crashed on bad input"


def test_a_failing_processor_is_retried_and_its_result_published_once(running):
    client = running.redis
    frame_id = producer(client).add("cam05", jpeg(seed=5), capabilities=["flaky"])
    wait_for(lambda: [e for e in results(client, "results:flaky") if e["frame_id"] == frame_id], message="retry")
    mine = [e for e in results(client, "results:flaky") if e["frame_id"] == frame_id]
    assert len(mine) == 1 and mine[0]["result"]["attempts"] == 2
    assert int(client.hget(keys.processor_stats("flaky"), "failed")) >= 1


def test_duplicate_frame_ids_are_dead_lettered(running):
    client = running.redis
    p = producer(client)
    p.add("cam06", jpeg(seed=6), capabilities=["sample_processing"], frame_id="dup-1")
    p.add("cam06", jpeg(seed=6), capabilities=["sample_processing"], frame_id="dup-1")
    wait_for(lambda: [d for d in dead_letters(client) if d.get("frame_id") == "dup-1"], message="duplicate")
    wait_for(lambda: [e for e in results(client, "sample:results") if e["frame_id"] == "dup-1"], message="first")
    assert len([e for e in results(client, "sample:results") if e["frame_id"] == "dup-1"]) == 1


def test_a_backlog_shares_tasks_while_each_frame_fails_retries_and_publishes_on_its_own(running):
    client = running.redis
    tasks_before = int(client.hget(keys.processor_stats("flaky"), "tasks") or 0)
    frames = [("cam07", jpeg(seed=700 + i), {"capabilities": ["flaky"], "frame_id": f"burst-{i}",
                                            "metadata": {"always_fail": True} if i == 11 else None})
              for i in range(24)]
    producer(client).add_many(frames)  # one round trip: ingest reads them as a backlog
    ok_ids = {f"burst-{i}" for i in range(24) if i != 11}
    wait_for(lambda: {e["frame_id"] for e in results(client, "results:flaky")} >= ok_ids, timeout_s=60,
             message="every good frame of the burst")
    wait_for(lambda: [d for d in dead_letters(client) if d.get("frame_id") == "burst-11"], message="dead letter")
    tasks = int(client.hget(keys.processor_stats("flaky"), "tasks")) - tasks_before
    assert 1 <= tasks < 12, f"24 frames for one worker process went out in {tasks} tasks"
    burst = [e for e in results(client, "results:flaky") if e["frame_id"].startswith("burst-")]
    assert len(burst) == 23 and all(e["result"]["attempts"] == 2 for e in burst)  # each retried on its own
    dead = next(d for d in dead_letters(client) if d.get("frame_id") == "burst-11")
    assert "after 3 attempts" in dead["reason"] and dead["processor"] == "flaky"


def test_frames_arriving_one_by_one_at_a_backed_up_queue_are_held_and_leave_in_fuller_tasks(running):
    client = running.redis
    tasks_before = int(client.hget(keys.processor_stats("plodder"), "tasks") or 0)
    send = producer(client)
    sent = []
    for i in range(60):  # one frame every 5 ms, for a processor that takes 20 ms a frame
        sent.append(send.add("cam09", jpeg(seed=900 + i), capabilities=["plodding"]))
        time.sleep(0.005)
    wait_for(lambda: {e["frame_id"] for e in results(client, "results:plodder")} >= set(sent), timeout_s=60,
             message="all 60 results")
    per_frame = Counter(e["frame_id"] for e in results(client, "results:plodder"))
    assert all(per_frame[frame_id] == 1 for frame_id in sent)
    tasks = int(client.hget(keys.processor_stats("plodder"), "tasks")) - tasks_before
    assert tasks <= 30, f"60 frames read one at a time went out in {tasks} tasks: nothing was held"
    # a held frame's entry is acknowledged once its task is sent: nothing is left pending
    wait_for(lambda: client.xpending("frames:capture", "detektr-ingest")["pending"] == 0, timeout_s=10,
             message="every entry acknowledged")


def test_a_task_may_carry_one_frame_reference_or_a_list_and_junk_in_a_list_is_dead_lettered(running):
    from detektr.celery_app import app

    client = running.redis
    client.set("test:bytes:one", jpeg(seed=801))
    ref = {"frame_id": "direct-1", "camera_id": "cam08", "timestamp": 1700000000.0, "format": "jpeg",
           "image_key": "test:bytes:one", "ingested_at": 1700000000.0}
    with app.connection_for_write(running.url) as connection:
        # one reference, as a user might send it; then a list with junk in it
        app.send_task(keys.task_name("sample"), args=[ref], queue="sample", connection=connection)
        app.send_task(keys.task_name("sample"), args=[[{**ref, "frame_id": "direct-2"}, {"frame_id": "junk"}]],
                      queue="sample", connection=connection)
    wait_for(lambda: {"direct-1", "direct-2"} <= {e["frame_id"] for e in results(client, "sample:results")},
             message="both references processed")
    wait_for(lambda: [d for d in dead_letters(client) if d.get("original.frame_id") == "junk"], message="junk")
    junk = next(d for d in dead_letters(client) if d.get("original.frame_id") == "junk")
    assert junk["stage"] == "process" and "not a frame reference" in junk["reason"]

"""Gating (a processor runs only when another's gate opens), batching, and affinity to workers."""

from __future__ import annotations

from collections import defaultdict

import pytest

from detektr import keys
from detektr.producer import FrameProducer
from tests.conftest import Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def running(cluster: Cluster) -> Cluster:
    cluster.worker("gatekeeper")
    cluster.worker("follower")
    cluster.worker("batcher")
    cluster.worker("sticky", name="sticky-a")
    cluster.worker("sticky", name="sticky-b")
    cluster.worker("maintenance")  # runs the periodic checks that beat sends, as in production
    cluster.beat()
    cluster.ingest()
    cluster.wait_live("gatekeeper", "follower", "batcher", "sticky")
    wait_for(lambda: len(cluster.redis.hgetall(keys.WORKER_QUEUES)) == 2, message="own queues of sticky workers")
    return cluster


def test_gated_processor_runs_only_where_the_gate_opens_and_gated_out_frames_are_counted(running):
    client = running.redis
    p = producer(client)
    opened = [p.add("cam01", jpeg(seed=i), capabilities=["following"], metadata={"open": True}) for i in range(3)]
    closed = [p.add("cam01", jpeg(seed=10 + i), capabilities=["following"], metadata={"open": False})
              for i in range(7)]
    wait_for(lambda: len(results(client, "results:gatekeeper")) >= 10, message="gatekeeper results")
    wait_for(lambda: len(results(client, "results:follower")) >= 3, message="follower results")
    followed = {entry["frame_id"]: entry["result"] for entry in results(client, "results:follower")}
    assert set(followed) == set(opened)
    assert all(result["gate_result"] == {"open": True} for result in followed.values())  # the gate's result came along
    gates = {entry["frame_id"]: entry for entry in results(client, "results:gatekeeper")}
    assert all(gates[f]["gate"] == "closed" and gates[f]["gated"] == "follower" for f in closed)
    assert all(gates[f]["gate"] == "open" for f in opened)
    assert int(client.hget(keys.processor_stats("follower"), "gated_out")) == 7
    assert int(client.hget(keys.camera_stats("cam01"), "gated_out")) == 7
    follower_stats = client.hgetall(keys.processor_stats("follower"))
    assert int(follower_stats[b"queued"]) == int(follower_stats[b"processed"]) == 3  # sent by the gate, counted
    assert int(follower_stats[b"routed"]) == 10  # routed with the gatekeeper: each ends processed or gated out
    camera = client.hgetall(keys.camera_stats("cam01"))
    assert int(camera[b"routed"]) == 10 + 10  # every frame for the gatekeeper and for the follower behind it


def test_gating_can_be_turned_off_by_configuration(running):
    client = running.redis
    # A second ingest, with gating off, reading an input stream of its own (a frame ends once per
    # processor, so the gated ingest must not see the same frame).
    running.ingest("ingest-ungated", DETEKTR_GATES="follower=none", DETEKTR_INPUT_STREAM="frames:ungated")
    try:
        ungated = FrameProducer(client, "frames:ungated", maxlen=1000, frame_ttl_s=60)
        frame_id = ungated.add("cam02", jpeg(seed=42), capabilities=["following"], metadata={"open": False})
        wait_for(lambda: [e for e in results(client, "results:follower") if e["frame_id"] == frame_id],
                 message="ungated follower result")
        ran = next(e for e in results(client, "results:follower") if e["frame_id"] == frame_id)
        assert ran["result"]["gate_result"] is None  # no gate ran: nothing to pass on
    finally:
        running.kill("ingest-ungated")


def test_a_batch_of_eight_is_processed_as_one_batch(running):
    client = running.redis
    sent = producer(client).add_many([("cam03", jpeg(seed=100 + i), {"capabilities": ["batching"]}) for i in range(8)])
    wait_for(lambda: len(results(client, "results:batcher")) >= 8, message="batch results")
    got = {entry["frame_id"]: entry["result"] for entry in results(client, "results:batcher")}
    assert set(got) == set(sent)
    assert all(result["batch"] == 8 and result["frame_id"] == frame_id for frame_id, result in got.items())
    assert sorted(result["index"] for result in got.values()) == list(range(8))
    stats = client.hgetall(keys.processor_stats("batcher"))
    assert int(stats[b"batches"]) == 1, stats


def test_affinity_keeps_each_camera_on_one_worker_and_a_dead_workers_tasks_move_on(running):
    client = running.redis
    p = producer(client)
    cameras = [f"cam{i:02d}" for i in range(10, 26)]
    for round_ in range(4):
        p.add_many([(camera, jpeg(seed=round_), {"capabilities": ["sticky"]}) for camera in cameras])
    wait_for(lambda: len(results(client, "results:sticky")) >= 64, message="sticky results")
    pids = defaultdict(set)
    for entry in results(client, "results:sticky"):
        pids[entry["camera_id"]].add(entry["result"]["pid"])
    assert all(len(handled) == 1 for handled in pids.values()), dict(pids)
    assert len({pid for handled in pids.values() for pid in handled}) == 2, "both workers should get cameras"

    # One worker dies: frames already routed to its own queue are moved to the shared queue by the
    # beat check (celery beat and a maintenance worker, both real processes).
    running.kill("sticky-a")
    sent = set(p.add_many([(camera, jpeg(seed=9), {"capabilities": ["sticky"]}) for camera in cameras]))
    wait_for(lambda: {e["frame_id"] for e in results(client, "results:sticky")} >= sent, timeout_s=60,
             message="frames of the dead worker processed")
    assert client.hlen(keys.WORKER_QUEUES) == 1
    log = (running.log_dir / "maintenance.log").read_text()
    assert "from dead worker queue sticky:sticky-a@" in log, "no task was waiting on the dead worker's queue"

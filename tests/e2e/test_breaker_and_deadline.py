"""A processor that keeps failing has its circuit opened (and closed again); frames past their deadline expire;
frames queued for a processor with no live worker left are dead-lettered."""

from __future__ import annotations

import pytest

from detektr.config import load_settings
from detektr.status import collect_status
from tests.conftest import Cluster, wait_for
from tests.e2e.util import dead_letters, jpeg, producer, results

pytestmark = pytest.mark.e2e

CLUSTER_ENV = {"DETEKTR_WORKER__NO_WORKER_S": "3", "DETEKTR_BREAKER__FAILURE_THRESHOLD": "4",
               "DETEKTR_BREAKER__RECOVERY_S": "5", "DETEKTR_BREAKER__SUCCESS_THRESHOLD": "2",
               "DETEKTR_BEAT__PROCESSORS_INTERVAL_S": "0.3"}


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Cluster:
    cluster.worker("fragile")
    cluster.worker("hasty")
    cluster.worker("maintenance")
    cluster.beat()
    cluster.ingest()
    cluster.wait_live("fragile", "hasty")
    return cluster


def breaker_state(cluster: Cluster, processor: str) -> str:
    settings = load_settings(redis_url=cluster.url)
    return collect_status(cluster.redis, settings)["processors"][processor]["breaker"]["state"]


def test_a_failing_processor_is_cut_off_then_tried_again_and_closed(running):
    client = running.redis
    p = producer(client)
    failing = [p.add("cam01", jpeg(seed=i), capabilities=["fragile"], metadata={"fail": True}) for i in range(2)]
    wait_for(lambda: breaker_state(running, "fragile") == "open", timeout_s=20, message="the breaker to open")
    wait_for(lambda: len([d for d in dead_letters(client) if d.get("frame_id") in failing]) == 2,
             message="the failing frames' dead letters")

    cut_off = p.add("cam01", jpeg(seed=10), capabilities=["fragile"])
    letter = wait_for(lambda: [d for d in dead_letters(client) if d.get("frame_id") == cut_off], timeout_s=5,
                      message="a dead letter for the frame sent while open")[0]
    assert letter["stage"] == "route" and "circuit open for fragile" in letter["reason"]
    assert cut_off not in {e["frame_id"] for e in results(client, "results:fragile")}

    wait_for(lambda: breaker_state(running, "fragile") == "half_open", timeout_s=15, message="the trial")
    trial = [p.add("cam01", jpeg(seed=20 + i), capabilities=["fragile"]) for i in range(2)]
    wait_for(lambda: {e["frame_id"] for e in results(client, "results:fragile")} >= set(trial),
             message="the trial frames processed")
    wait_for(lambda: breaker_state(running, "fragile") == "closed", timeout_s=10, message="the breaker to close")


def test_frames_past_their_deadline_are_counted_as_expired_not_processed(running):
    client = running.redis
    sent = producer(client).add_many([("cam02", jpeg(seed=40 + i), {"capabilities": ["hasty"]}) for i in range(20)])

    def ended():
        books = collect_status(client, load_settings(redis_url=running.url))["accounting"]["processors"].get("hasty")
        return books if books and books["in_flight"] == 0 and books["routed"] == 20 else None

    books = wait_for(ended, timeout_s=30, message="every hasty frame to end")
    processed = {e["frame_id"] for e in results(client, "results:hasty")}
    assert books["processed"] == len(processed) and books["expired"] == 20 - len(processed)
    assert 1 <= len(processed) < 20 and books["dead"] == 0
    assert not [d for d in dead_letters(client) if d.get("frame_id") in sent]


def test_frames_queued_for_a_processor_with_no_live_worker_left_are_dead_lettered_with_why(running):
    client = running.redis
    running.worker("slow")
    running.wait_live("slow")
    sent = producer(client).add_many([("cam03", jpeg(seed=60 + i), {"capabilities": ["slow"]}) for i in range(4)])
    wait_for(lambda: any(client.get(f"test:started:{f}") for f in sent), message="the slow worker to start one")
    running.kill("slow")  # no worker of `slow` is left; its tasks go back to the queue, then nowhere

    def all_dead():
        letters = [d for d in dead_letters(client) if d.get("frame_id") in sent]
        return letters if len(letters) == 4 else None

    letters = wait_for(all_dead, timeout_s=40, message="the stranded frames' dead letters")
    assert all("no live worker of slow" in d["reason"] for d in letters)
    books = collect_status(client, load_settings(redis_url=running.url))["accounting"]["processors"]["slow"]
    assert books["routed"] == books["dead"] == 4 and books["in_flight"] == 0

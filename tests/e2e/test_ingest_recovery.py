"""Ingest replicas: pending entries of a dead consumer are reclaimed; a killed replica loses nothing."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.conftest import Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e

GROUP = "detektr-ingest"
STREAM = "frames:capture"


@pytest.fixture(scope="module", autouse=True)
def running(cluster: Cluster) -> Cluster:
    cluster.worker("sample", concurrency=2)
    cluster.wait_live("sample")
    return cluster


def sample_frame_ids(client) -> Counter:
    return Counter(entry["frame_id"] for entry in results(client, "sample:results"))


def test_entries_left_pending_by_a_dead_consumer_are_reclaimed(running):
    client = running.redis
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    sent = producer(client).add_many([("cam01", jpeg(seed=i), {}) for i in range(20)])
    # A consumer reads the entries and dies before acknowledging them (what a SIGKILL leaves behind).
    taken = client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=100)
    assert len(taken[0][1]) == 20
    assert client.xpending(STREAM, GROUP)["pending"] == 20

    running.ingest("survivor")
    wait_for(lambda: set(sample_frame_ids(client)) >= set(sent), timeout_s=60, message="reclaimed frames processed")
    assert all(sample_frame_ids(client)[frame_id] == 1 for frame_id in sent)
    wait_for(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, message="nothing pending")
    assert int(client.hget("detektr:stats:ingest", "reclaimed")) >= 20


def test_killing_one_of_two_ingest_replicas_loses_no_frame(running):
    client = running.redis
    running.ingest("replica-b")
    p = producer(client)
    first = p.add_many([("cam02", jpeg(seed=1000 + i), {}) for i in range(100)])
    running.kill("survivor")  # SIGKILL, mid-stream
    killed_at = time.monotonic()
    second = p.add_many([("cam02", jpeg(seed=2000 + i), {}) for i in range(100)])
    sent = set(first) | set(second)
    wait_for(lambda: set(sample_frame_ids(client)) >= sent, timeout_s=90, message="all 200 frames processed")
    print(f"\nall 200 frames accounted {time.monotonic() - killed_at:.1f} s after one of two ingest replicas "
          "was killed")
    counts = sample_frame_ids(client)
    assert all(counts[frame_id] == 1 for frame_id in sent), "a frame was published twice"
    assert running.processes["replica-b"].poll() is None

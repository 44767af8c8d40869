"""Priorities: urgent frames go first, and aging bounds how long a frame of priority 0 waits behind them."""

from __future__ import annotations

import pytest

from tests.conftest import Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e


CLUSTER_ENV = {"DETEKTR_BACKPRESSURE__AGING_S": "1", "DETEKTR_BEAT__PROCESSORS_INTERVAL_S": "0.3",
               "DETEKTR_INGEST__FRAMES_PER_TASK": "8"}


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Cluster:
    cluster.worker("plodder")
    cluster.worker("maintenance")
    cluster.beat()
    cluster.ingest()
    cluster.wait_live("plodder")
    return cluster


def test_a_calm_frame_waits_about_the_aging_time_not_for_every_urgent_frame(running):
    client = running.redis
    p = producer(client)
    # 300 urgent frames: 6 s of work for plodder (20 ms a frame); then one frame of priority 0.
    urgent = p.add_many([(f"cam{i % 3}", jpeg(seed=i), {"capabilities": ["plodding"], "priority": 9})
                         for i in range(300)])
    calm = p.add("cam9", jpeg(seed=999), capabilities=["plodding"], priority=0)
    done = wait_for(lambda: (lambda got: got if len(got) == 301 else None)(
        {e["frame_id"]: e for e in results(client, "results:plodder")}), timeout_s=60, message="every frame")
    order = [e["frame_id"] for e in results(client, "results:plodder")]
    waited_ms = float(done[calm]["latency_ms"])
    assert waited_ms < 3500, f"the calm frame waited {waited_ms:.0f} ms behind urgent ones"
    assert order.index(calm) < len(order) - 50, "the calm frame came last: nothing aged it"
    urgent_latencies = sorted(float(done[f]["latency_ms"]) for f in urgent)
    assert urgent_latencies[len(urgent_latencies) // 2] < 4000  # the urgent ones still go first
    log = (running.log_dir / "maintenance.log").read_text()
    assert "that waited over 1.0 s ahead on queue plodder" in log

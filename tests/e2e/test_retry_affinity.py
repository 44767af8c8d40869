"""A failed frame of an affinity processor is retried on the worker its camera sticks to, not just any worker."""

from __future__ import annotations

import pytest

from detektr import keys
from tests.conftest import Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e


def test_a_retry_goes_back_to_the_own_queue_of_the_worker_that_holds_the_cameras_state(cluster: Cluster):
    cluster.worker("sticky-flaky", name="flaky-a")
    cluster.worker("sticky-flaky", name="flaky-b")
    cluster.ingest()
    cluster.wait_live("sticky-flaky")
    client = cluster.redis
    wait_for(lambda: len({b.decode() for b in client.hkeys(keys.WORKER_QUEUES)}) == 2, message="own queues")
    sent = producer(client).add_many([(f"cam{i:02d}", jpeg(seed=i), {"capabilities": ["sticky_flaky"]})
                                      for i in range(16)])
    done = wait_for(lambda: (lambda got: got if len(got) == 16 else None)(
        [e for e in results(client, "results:sticky-flaky") if e["frame_id"] in sent]), timeout_s=60,
        message="results after one retry each")
    assert len({e["result"]["pid"] for e in done}) == 2, "both workers should hold cameras"
    moved = [e["frame_id"] for e in done if e["result"]["pid"] != e["result"]["first_pid"]]
    assert moved == [], f"retried on another worker than the first attempt: {moved}"

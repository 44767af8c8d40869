"""A worker process killed in the middle of a task: the task goes back to the queue and is done."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def running(cluster: Cluster) -> Cluster:
    cluster.worker("slow", concurrency=1)
    cluster.ingest()
    cluster.wait_live("slow")
    return cluster


def test_a_task_whose_worker_process_dies_is_delivered_again(running):
    client = running.redis
    frame_id = producer(client).add("cam01", jpeg(seed=1), capabilities=["slow"])
    pid = int(wait_for(lambda: client.get(f"test:started:{frame_id}"), message="task started"))
    os.kill(pid, signal.SIGKILL)  # the pool process dies mid-task; the worker replaces it
    killed_at = time.monotonic()
    done = wait_for(lambda: [e for e in results(client, "results:slow") if e["frame_id"] == frame_id],
                    timeout_s=60, message="result after the worker process was lost")
    print(f"\nthe frame of a killed pool process had its result {time.monotonic() - killed_at:.1f} s later")
    assert len(done) == 1 and done[0]["result"]["pid"] != pid

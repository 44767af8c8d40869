"""Frames that ingest holds for a backed-up queue: sent, and their entries acknowledged, when ingest stops."""

from __future__ import annotations

import signal
import time

import pytest

from detektr import keys
from detektr.registry import queue_depths
from tests.conftest import Cluster, wait_for
from tests.e2e.util import jpeg, producer

pytestmark = pytest.mark.e2e


def pending(client) -> int:
    return int(client.xpending("frames:capture", "detektr-ingest")["pending"])


def waiting(client) -> int:
    return queue_depths(client, ["slow"])["slow"]


def test_a_stopping_ingest_sends_the_frames_it_holds_and_acknowledges_their_entries(cluster: Cluster):
    cluster.worker("slow", concurrency=1)  # `slow` spends 30 s on each frame's first attempt
    ingest = cluster.ingest(DETEKTR_INGEST__MAX_HOLD_MS="10000", DETEKTR_INGEST__CLAIM_IDLE_MS="60000")
    cluster.wait_live("slow")
    client = cluster.redis
    send = producer(client)

    first = send.add("cam01", jpeg(seed=1), capabilities=["slow"])
    wait_for(lambda: client.get(f"test:started:{first}"), message="the worker busy with the first frame")
    send.add("cam01", jpeg(seed=2), capabilities=["slow"])  # nothing waits in the queue yet: leaves at once
    wait_for(lambda: waiting(client) == 1, message="the second frame waiting in the queue")

    for i in range(3):  # the worker's one process has a task waiting: these are held
        send.add("cam01", jpeg(seed=10 + i), capabilities=["slow"])
    wait_for(lambda: int(client.hget(keys.INGEST_STATS, "read") or 0) == 5, message="all five frames read")
    time.sleep(0.5)
    assert waiting(client) == 1, "held frames went out while the queue was backed up"
    assert pending(client) == 3, "a held frame's entry must stay pending until its task is sent"

    ingest.send_signal(signal.SIGTERM)
    assert ingest.wait(15) == 0
    assert waiting(client) == 2  # the three held frames, in one task
    assert pending(client) == 0
    assert int(client.hget(keys.processor_stats("slow"), "tasks")) == 3
    cluster.kill("slow")  # its task would take 30 s

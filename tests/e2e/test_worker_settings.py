"""Worker settings: a processor's required settings (a worker lacking one takes none of its frames), OpenCV threads."""

from __future__ import annotations

import pytest

from detektr.registry import live_processors, read_heartbeats
from tests.conftest import Cluster, wait_for
from tests.e2e.util import dead_letters, jpeg, producer, results

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def running(cluster: Cluster) -> Cluster:
    cluster.ingest()
    return cluster


def test_a_worker_with_nothing_it_can_serve_exits_with_the_reason(running):
    process = running.worker("needy", name="needy-only")
    assert process.wait(60) == 2
    running.processes.pop("needy-only")  # exited as it should; not a casualty for wait_live
    log = (running.log_dir / "needy-only.log").read_text().strip().splitlines()
    assert log == ["detektr worker: nothing to serve: processor needy needs TEST_NEEDY_TOKEN to be set"]


def test_a_worker_leaves_the_queue_it_cannot_serve_to_workers_that_can(running):
    client = running.redis
    running.worker("needy,alpha", name="mixed")
    running.wait_live("alpha")
    beat = next(b for b in read_heartbeats(client, 3) if b["hostname"].startswith("mixed@"))
    assert beat["queues"] == ["alpha"] and "needy" not in live_processors(client, 3)

    refused = producer(client).add("cam01", jpeg(seed=1), capabilities=["needy"])
    dead = wait_for(lambda: [d for d in dead_letters(client) if d.get("frame_id") == refused], message="dead letter")
    assert dead[0]["stage"] == "route" and "no live processor offers needy" in dead[0]["reason"]

    running.worker("needy", name="needy-set", TEST_NEEDY_TOKEN="abc")
    running.wait_live("needy")
    taken = [producer(client).add("cam01", jpeg(seed=seed), capabilities=["needy", "shared"]) for seed in range(20)]
    done = wait_for(lambda: (lambda got: got if len(got) == 20 else None)(
        [r for r in results(client, "results:needy") if r["frame_id"] in taken]), message="results of needy")
    assert all(r["result"] == {"token_length": 3} for r in done)
    assert not [d for d in dead_letters(client) if d.get("frame_id") in taken]


def test_a_worker_runs_opencv_with_the_threads_it_was_given(running):
    running.worker("cv-threads", concurrency=2, DETEKTR_WORKER__OPENCV_THREADS="3")
    running.wait_live("cv-threads")
    sent = [producer(running.redis).add("cam01", jpeg(seed=seed), capabilities=["cv_threads"]) for seed in range(4)]
    done = wait_for(lambda: (lambda got: got if len(got) == 4 else None)(
        [r for r in results(running.redis, "results:cv-threads") if r["frame_id"] in sent]), message="results")
    assert {r["result"]["threads"] for r in done} == {3}


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_a_worker_without_child_processes_sets_up_its_processors_before_it_goes_live(running, pool):
    client = running.redis
    client.delete("test:primed")
    running.worker("primed", name=f"primed-{pool}", pool=pool)
    running.wait_live("primed")
    assert client.get("test:primed") is not None, "routable before its processor's setup had run"
    beat = next(b for b in read_heartbeats(client, 3) if b["hostname"].startswith(f"primed-{pool}@"))
    assert beat["pool"] == pool
    frame_id = producer(client).add("cam01", jpeg(seed=5), capabilities=["priming"])
    done = wait_for(lambda: [e for e in results(client, "results:primed") if e["frame_id"] == frame_id],
                    message="result")
    assert done[0]["result"]["pid"] == done[0]["result"]["primed_in"]
    running.kill(f"primed-{pool}")
    wait_for(lambda: "primed" not in live_processors(client, 3), timeout_s=15, message="primed gone")

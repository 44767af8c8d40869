"""How a worker starts: a unique name on its own, a taken name refused, and every mistake one line and exit 2."""

from __future__ import annotations

import pytest

from detektr.registry import read_heartbeats
from tests.conftest import Cluster, wait_for
from tests.e2e.util import dead_letters, jpeg, producer, results

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def running(cluster: Cluster) -> Cluster:
    cluster.ingest()
    return cluster


def refusal(cluster: Cluster, name: str, queue: str, **env: str) -> list[str]:
    """Start a worker that must refuse to start; return what it printed."""
    process = cluster.worker(queue, name=name, **env)
    assert process.wait(60) == 2, f"worker {name} did not exit with 2; log in {cluster.log_dir}"
    cluster.processes.pop(name)
    return (cluster.log_dir / f"{name}.log").read_text().strip().splitlines()


def test_two_workers_on_one_host_without_names_are_two_workers(running):
    client = running.redis
    running.worker("alpha", name="plain-alpha", node_name=None)
    running.worker("cv-threads", name="plain-cv", node_name=None)
    running.wait_live("alpha", "cv-threads")
    names = {beat["hostname"] for beat in read_heartbeats(client, 3)}
    alpha_name = next(n for n in names if n.startswith("alpha-"))
    cv_name = next(n for n in names if n.startswith("cv-threads-"))
    assert alpha_name.split("@")[1] == cv_name.split("@")[1]  # one host, two names (queue and pid)
    sent = [producer(client).add("cam01", jpeg(seed=i), capabilities=["shared", "cv_threads"]) for i in range(20)]
    for stream in ("results:alpha", "results:cv-threads"):
        wait_for(lambda: {e["frame_id"] for e in results(client, stream)} >= set(sent), message=stream)
    assert not [d for d in dead_letters(client) if d.get("frame_id") in sent]


def test_a_name_taken_by_a_live_worker_is_refused(running):
    running.worker("gamma", name="first-dup", node_name="dup@%h")
    running.wait_live("gamma")
    lines = refusal(running, "second-dup", "gamma", node_name="dup@%h")
    assert len(lines) == 1 and "dup@" in lines[0] and "is taken by a live worker" in lines[0]


def test_a_queue_no_processor_uses_is_refused_with_the_queues_that_exist(running):
    lines = refusal(running, "nosuch", "nosuchqueue")
    assert len(lines) == 1 and lines[0].startswith("detektr worker: no processor uses the queue nosuchqueue")
    assert "alpha" in lines[0] and "sample" in lines[0]


def test_a_processor_module_that_does_not_import_is_one_line(running):
    lines = refusal(running, "badmodule", "alpha", DETEKTR_PROCESSORS="tests.e2e.procs,no_such_module_here")
    assert len(lines) == 1
    assert "cannot import processor module no_such_module_here (from DETEKTR_PROCESSORS)" in lines[0]


def test_a_processor_whose_package_is_missing_is_refused_naming_the_package(running):
    lines = refusal(running, "unpackaged", "unpackaged")
    assert lines == ["detektr worker: nothing to serve: processor unpackaged needs the package "
                     "detektr_test_absent_package (pip install detektr_test_absent_package)"]


def test_bad_settings_stop_the_worker_in_one_line(running):
    assert refusal(running, "badrouting", "alpha", DETEKTR_ROUTING="random")[0].startswith(
        "detektr: invalid configuration: DETEKTR_ROUTING")
    lines = refusal(running, "badtuned", "tuned", DETEKTR_TUNED_FACTOR="99")
    assert lines == ["detektr worker: processor tuned: invalid settings: DETEKTR_TUNED_FACTOR: "
                     "Input should be less than or equal to 10"]


def test_a_processor_gets_its_settings_and_unknown_variables_are_reported(running):
    client = running.redis
    running.worker("tuned", name="tuned", DETEKTR_TUNED_FACTOR="3", DETEKTR_ROUTNG="affinity",
                   DETEKTR_TUNED_FACTR="4")
    running.wait_live("tuned")
    frame_id = producer(client).add("cam01", jpeg(width=160, seed=3), capabilities=["tuning"])
    done = wait_for(lambda: [e for e in results(client, "results:tuned") if e["frame_id"] == frame_id],
                    message="result of tuned")
    assert done[0]["result"] == {"scaled": 480}
    log = (running.log_dir / "tuned.log").read_text()
    assert "DETEKTR_ROUTNG is not a detektr setting (did you mean DETEKTR_ROUTING?)" in log
    assert "DETEKTR_TUNED_FACTR is not a detektr setting (did you mean DETEKTR_TUNED_FACTOR?)" in log

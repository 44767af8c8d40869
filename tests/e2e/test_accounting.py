"""Every frame accounted for: the books balance, each pair ends once, and a finished frame's bytes are gone."""

from __future__ import annotations

import pytest

from detektr import keys
from detektr.config import load_settings
from detektr.status import collect_status
from tests.conftest import Cluster, wait_for
from tests.e2e.util import dead_letters, jpeg, producer, results

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def running(cluster: Cluster) -> Cluster:
    for queue in ("alpha", "flaky", "gatekeeper", "follower"):
        cluster.worker(queue)
    cluster.ingest()
    cluster.wait_live("alpha", "flaky", "gatekeeper", "follower")
    return cluster


def test_the_books_balance_once_everything_has_ended(running):
    client = running.redis
    settings = load_settings()
    p = producer(client)
    sent = [p.add("cam01", jpeg(seed=i), capabilities=["shared"]) for i in range(12)]
    sent += [p.add("cam01", jpeg(seed=20 + i), capabilities=["flaky"], metadata={"always_fail": i == 0})
             for i in range(4)]
    sent += [p.add("cam02", jpeg(seed=40 + i), capabilities=["following"], metadata={"open": i % 2 == 0})
             for i in range(6)]
    sent += [p.add("cam02", jpeg(seed=60), capabilities=["nobody_offers_this"])]
    client.xadd(settings.input_stream, {"frame_id": "broken"})  # dead-lettered at ingest

    def settled():
        accounting = collect_status(client, settings)["accounting"]
        processors = accounting["processors"]
        busy = [name for name, b in processors.items() if b["in_flight"]]
        return accounting if not busy and accounting["input"]["unread"] == 0 and processors else None

    accounting = wait_for(settled, timeout_s=60, message="every routed frame to end")
    books_in = accounting["input"]
    assert books_in["appended"] == books_in["read"] + books_in["trimmed_unread"] == 24
    assert books_in["trimmed_unread"] == 0 and books_in["pending"] == 0 and books_in["dead"] == 2
    procs = accounting["processors"]
    for name, b in procs.items():
        assert b["routed"] == b["processed"] + b["skipped"] + b["gated"] + b["expired"] + b["dead"], name
    assert procs["flaky"] == {"routed": 4, "processed": 3, "skipped": 0, "gated": 0, "expired": 0, "dead": 1,
                              "in_flight": 0}
    assert procs["follower"]["routed"] == 6 and procs["follower"]["processed"] == 3 and procs["follower"]["gated"] == 3
    assert sum(procs[n]["routed"] for n in ("alpha", "beta", "gamma") if n in procs) == 12
    for name in ("flaky", "gatekeeper", "follower", "alpha"):
        assert procs[name]["processed"] == client.xlen(f"results:{name}"), name

    # Each pair ended once: no frame has both a result and a dead letter for the same processor.
    ended = {(e["processor"], e["frame_id"]) for name in procs for e in results(client, f"results:{name}")
             if client.exists(f"results:{name}")}
    dead = {(d["processor"], d["frame_id"]) for d in dead_letters(client) if d.get("processor")}
    assert not ended & dead
    # The bytes of every finished frame are gone; nothing waits for its TTL.
    assert list(client.scan_iter(match=keys.frame_bytes("*"))) == []
    assert list(client.scan_iter(match=keys.frame_refs("*"))) == []
    assert client.xlen(settings.input_stream) == 0  # inline bytes stayed in their entries, deleted once settled
    assert len(sent) == 23
    # Celery (and Flower) see the failing processor's tasks as retried, then failed.
    worker_log = (running.log_dir / "flaky.log").read_text()
    assert "retry: Retry in" in worker_log and "raised unexpected: ProcessorFailed" in worker_log

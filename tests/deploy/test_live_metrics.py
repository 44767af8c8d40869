"""Every metric the dashboard queries is one that a real `detektr api`, worker and ingest export once frames flow."""

from __future__ import annotations

import socket
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BIN, wait_for
from tests.deploy.test_monitoring import dashboard_metrics, exposed_names

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> set[str]:
    """The sample names of one /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_dashboard_metrics_are_exported_by_a_running_cluster(cluster):
    api_port, worker_port, ingest_port = free_port(), free_port(), free_port()
    cluster.worker("sample", node_name=None, pool="solo", DETEKTR_METRICS__PORT=str(worker_port))
    cluster.ingest(DETEKTR_METRICS__PORT=str(ingest_port))
    cluster._start("api", [str(BIN / "detektr"), "api", "--port", str(api_port)])
    cluster.wait_live("sample")
    sent = subprocess.run([str(BIN / "detektr"), "inject", "--rate", "20", "--duration", "2", "--cameras", "2",
                           "--capabilities", "sample_processing"], env=cluster.env, capture_output=True,
                          text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: cluster.redis.xlen("sample:results") >= 30, timeout_s=60, message="the frames' results")
    exported: set[str] = set()
    for port in (api_port, worker_port, ingest_port):
        exported |= wait_for(lambda port=port: _try_scrape(port), timeout_s=30, message=f"/metrics on {port}")
    used = dashboard_metrics()
    assert used <= exported, f"the dashboard queries metrics nobody exports: {sorted(used - exported)}"
    catalogue = exposed_names()
    assert catalogue <= exported, f"catalogue metrics not exported: {sorted(catalogue - exported)}"


def _try_scrape(port: int) -> set[str]:
    try:
        return scrape(port)
    except OSError:
        return set()

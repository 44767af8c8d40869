"""The containers' health checks, against a real server and real detektr processes."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time

import pytest

from detektr.healthcheck import beat_problem, capture_problem, ingest_problem, worker_problem
from tests.conftest import BIN, wait_for

pytestmark = pytest.mark.e2e


def check(cluster, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m detektr.healthcheck <role>` as the container runs it, with the cluster's settings."""
    return subprocess.run([sys.executable, "-m", "detektr.healthcheck", role, *args], env=cluster.env,
                          capture_output=True, text=True, timeout=30)


def test_decisions_need_a_fresh_sign_of_life_from_this_host():
    assert worker_problem([{"machine": "a", "hostname": "face-1@a"}], "a") == ""
    assert "no live worker" in worker_problem([{"machine": "b", "hostname": "face-1@b"}], "a")
    consumers = [{"name": b"a-7", "idle": 2000}, {"name": b"b-7", "idle": 10}]
    assert ingest_problem(consumers, "a-", 30_000) == ""
    assert "idle for 40 s" in ingest_problem([{"name": "a-7", "idle": 40_000}], "a-", 30_000)
    assert "no ingest consumer" in ingest_problem(consumers, "c-", 30_000)
    assert capture_problem({"door": {"host": "a", "alive": True}}, "a") == ""
    assert "stale" in capture_problem({"door": {"host": "a", "alive": False}}, "a")
    assert "no camera state" in capture_problem({"door": {"host": "b", "alive": True}}, "a")
    assert beat_problem(100.0, 110.0, 15.0) == ""
    assert "ran 20 s ago" in beat_problem(100.0, 120.0, 15.0)
    assert "has not run" in beat_problem(None, 120.0, 15.0)


def test_a_worker_is_healthy_while_its_heartbeat_is_live(cluster):
    assert check(cluster, "worker").returncode == 1
    worker = cluster.worker("sample", node_name=None, pool="solo")
    cluster.wait_live("sample")
    healthy = check(cluster, "worker")
    assert healthy.returncode == 0, healthy.stderr
    cluster.kill("sample")
    worker.wait(10)
    wait_for(lambda: check(cluster, "worker").returncode == 1, timeout_s=20, interval_s=1,
             message="the killed worker's heartbeat to expire")


def test_ingest_is_healthy_while_its_consumer_reads(cluster):
    unhealthy = check(cluster, "ingest")
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stderr
    cluster._start("ingest", [str(BIN / "detektr"), "ingest"])  # named <host>-<pid>, as in a container
    wait_for(lambda: check(cluster, "ingest").returncode == 0, timeout_s=30, interval_s=0.5,
             message="ingest to read the input stream")
    cluster.kill("ingest")
    idle = check(cluster, "ingest")
    assert idle.returncode == 0, "a consumer idle for less than the limit is not yet unhealthy"


def test_capture_is_healthy_while_it_writes_camera_states(cluster):
    assert "no camera state" in check(cluster, "capture").stderr
    cluster._start("capture", [str(BIN / "detektr"), "capture", "--camera", "probe", "--source", "synthetic",
                               "--fps", "1", "--width", "64"])
    wait_for(lambda: check(cluster, "capture").returncode == 0, timeout_s=30, interval_s=0.5,
             message="capture to write its camera state")


def test_beat_is_healthy_while_its_checks_run(cluster):
    assert "has not run" in check(cluster, "beat").stderr
    cluster.worker("maintenance", node_name=None, pool="solo")
    cluster.beat()
    wait_for(lambda: check(cluster, "beat").returncode == 0, timeout_s=30, interval_s=0.5,
             message="beat's processors check to run")
    cluster.kill("beat")


def test_http_check_asks_the_url(cluster):
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the handler's API)
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        assert check(cluster, "http", f"http://127.0.0.1:{port}/health").returncode == 0
        failing = check(cluster, "http", f"http://127.0.0.1:{port}/broken")
        assert failing.returncode == 1 and "503" in failing.stderr
    finally:
        server.shutdown()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    started = time.monotonic()
    assert check(cluster, "http", f"http://127.0.0.1:{closed}/health").returncode == 1
    assert time.monotonic() - started < 10


def test_a_server_that_cannot_be_reached_is_unhealthy(cluster):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "detektr.healthcheck", "worker"],
                            env={**cluster.env, "REDIS_URL": f"redis://:secret@127.0.0.1:{closed}/0"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "cannot reach the server" in result.stderr
    assert "secret" not in result.stderr

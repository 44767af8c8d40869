"""Prometheus metrics and `detektr api` on real processes: a prefork worker, ingest and the API, started as users do.

The worker (`-c 2`) and ingest serve their own /metrics; `detektr api --port <free>` serves the
cluster-wide figures and the control API. Frames flow, and what each process exposes is checked
by value against what happened.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from detektr.keys import celery_queue_lists
from detektr.metrics import CATALOGUE, declared_sample
from tests.conftest import wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TOKEN = "t0k-" + secrets.token_hex(12)
API_MAX_BYTES = 300_000
"""The API process's DETEKTR_FRAMES__MAX_BYTES: small, so that an oversized upload is cheap to send."""
CLUSTER_ENV = {"DETEKTR_WORKER__MAX_RETRIES": "0"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value, or None when it is not there."""
    return samples(text).get((name, tuple(sorted(labels.items()))))


class Api:
    """A running `detektr api` and an HTTP client for it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def wait_up(self) -> None:
        def up() -> bool:
            assert self.process.poll() is None, "detektr api exited"
            try:
                return self.http.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, 0.2, "detektr api to answer /health")


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("worker", "ingest", "api", "open_api")}


@pytest.fixture(scope="module")
def api(cluster, ports) -> Api:
    """The plodder worker (prefork, 2 children) and ingest, each serving /metrics, and the API with a token."""
    cluster.worker("plodder", 2, node_name=None, DETEKTR_METRICS__PORT=str(ports["worker"]),
                   DETEKTR_METRICS__HOST="127.0.0.1")
    cluster.ingest(DETEKTR_METRICS__PORT=str(ports["ingest"]), DETEKTR_METRICS__HOST="127.0.0.1")
    running = Api(cluster._start("api", [str(BIN / "detektr"), "api", "--port", str(ports["api"])],
                                 dict(cluster.env, DETEKTR_API_TOKEN=TOKEN,
                                      DETEKTR_FRAMES__MAX_BYTES=str(API_MAX_BYTES))), ports["api"])
    cluster.wait_live("plodder")
    running.wait_up()
    return running


def scrape(port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def send(cluster, count: int, cameras: tuple[str, ...], capability: str = "plodding") -> list[str]:
    frames = [(cameras[i % len(cameras)], jpeg(seed=i), {"capabilities": [capability]}) for i in range(count)]
    return producer(cluster.redis).add_many(frames)


def test_frames_flow_and_each_process_counts_them(cluster, api, ports):
    sent = send(cluster, 60, ("cam-a", "cam-b"))
    wait_for(lambda: len(results(cluster.redis, "results:plodder")) >= 60, 60, message="60 results")
    done = results(cluster.redis, "results:plodder")
    assert sorted(r["frame_id"] for r in done) == sorted(sent)
    assert len({r["result"]["pid"] for r in done}) == 2, "both prefork children should have worked"

    worker = scrape(ports["worker"])  # one scrape of the main process sees both children
    assert value(worker, "detektr_processor_inference_seconds_count", processor="plodder") == 60
    seconds = value(worker, "detektr_processor_inference_seconds_sum", processor="plodder")
    assert 60 * 0.019 <= seconds < 60 * 0.2  # plodder sleeps 20 ms a frame: its own time, not queueing
    for camera in ("cam-a", "cam-b"):
        assert value(worker, "detektr_frame_latency_seconds_count", camera=camera, processor="plodder") == 30

    cluster_text = scrape(ports["api"])
    for camera in ("cam-a", "cam-b"):
        for state, expected in (("in", 30), ("routed", 30), ("processed", 30), ("dead", 0), ("skipped", 0)):
            assert value(cluster_text, "detektr_camera_frames_total", camera=camera, state=state) == expected
    assert value(cluster_text, "detektr_processor_frames_total", processor="plodder", state="processed") == 60
    assert value(cluster_text, "detektr_processor_frames_total", processor="plodder", state="dead") == 0
    assert value(cluster_text, "detektr_processor_routed_total", processor="plodder") == 60
    assert value(cluster_text, "detektr_processor_failures_total", processor="plodder") == 0
    assert value(cluster_text, "detektr_processor_workers", processor="plodder") == 1
    assert value(cluster_text, "detektr_processor_capacity", processor="plodder") == 2
    assert value(cluster_text, "detektr_queue_depth", processor="plodder") == 0
    assert value(cluster_text, "detektr_processor_circuit_state", processor="plodder", state="closed") == 1
    assert value(cluster_text, "detektr_processor_circuit_state", processor="plodder", state="open") == 0
    assert value(cluster_text, "detektr_ingest_entries_total", outcome="read") == 60
    assert value(cluster_text, "detektr_ingest_entries_total", outcome="routed") == 60
    assert value(cluster_text, "detektr_ingest_lag_entries") == 0

    ingest = scrape(ports["ingest"])  # one routing decision per frame that entered
    assert value(ingest, "detektr_ingest_routing_seconds_count") == 60

    def detecting() -> float:  # frames ran within the API's window: Frigate's detection_fps is above 0
        return value(scrape(ports["api"]), "detektr_camera_detection_fps", camera="cam-a") or 0.0

    assert wait_for(detecting, 15, 0.5, "detection_fps above 0") > 0
    stats = api.http.get("/api/v1/stats").json()
    assert stats["cameras"]["cam-a"]["detection_fps"] > 0 and stats["cameras"]["cam-a"]["process_fps"] > 0
    assert 15 <= stats["detectors"]["plodder"]["inference_speed"] < 200  # ms per frame; plodder sleeps 20 ms
    assert stats["service"]["version"] and stats["service"]["uptime"] >= 0


def test_a_threads_pool_worker_serves_its_figures_too(cluster, api):
    port = free_port()
    cluster.worker("sticky", 2, pool="threads", node_name=None, DETEKTR_METRICS__PORT=str(port),
                   DETEKTR_METRICS__HOST="127.0.0.1")
    cluster.wait_live("sticky")
    send(cluster, 8, ("cam-s",), capability="sticky")
    wait_for(lambda: len(results(cluster.redis, "results:sticky")) >= 8, 30, message="8 results of sticky")
    worker = scrape(port)
    assert value(worker, "detektr_processor_inference_seconds_count", processor="sticky") == 8
    assert value(worker, "detektr_frame_latency_seconds_count", camera="cam-s", processor="sticky") == 8


def test_every_exposed_metric_is_declared_in_the_catalogue(api, ports):
    exposed = {where: {s.name for f in text_string_to_metric_families(scrape(ports[where])) for s in f.samples}
               for where in ("worker", "ingest", "api")}
    scope = {"worker": "process", "ingest": "process", "api": "cluster"}
    for where, names in exposed.items():
        undeclared = sorted(n for n in names if declared_sample(n) is None)
        assert undeclared == [], f"{where} exposes undeclared metrics"
        assert {declared_sample(n).scope for n in names} == {scope[where]}
    assert {declared_sample(n).name for n in exposed["api"]} == {m.name for m in CATALOGUE if m.scope == "cluster"}
    assert {declared_sample(n).name for n in exposed["worker"]} == {
        "detektr_processor_inference_seconds", "detektr_frame_latency_seconds"}
    assert {declared_sample(n).name for n in exposed["ingest"]} == {"detektr_ingest_routing_seconds"}


def test_mutations_need_the_token(cluster, api, ports):
    body = {"name": "plates", "capabilities": ["plate_reading"], "capacity": 3}
    assert api.http.post("/api/v1/processors/register", json=body).status_code == 401
    wrong = api.http.post("/api/v1/processors/register", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong token"
    assert api.http.post("/api/v1/frames?camera=x", content=jpeg()).status_code == 401
    assert api.http.delete("/api/v1/processors/plates").status_code == 401
    assert api.http.get("/api/v1/processors").status_code == 200  # reads are open by default

    tokenless = Api(cluster._start("open_api", [str(BIN / "detektr"), "api", "--port", str(ports["open_api"])],
                                   {k: v for k, v in cluster.env.items() if "API_TOKEN" not in k}),
                    ports["open_api"])
    tokenless.wait_up()
    for response in (
        tokenless.http.post("/api/v1/processors/register", json=body, headers={"Authorization": f"Bearer {TOKEN}"}),
        tokenless.http.post("/api/v1/frames?camera=x", content=jpeg()),
        tokenless.http.delete("/api/v1/processors/plates", headers={"Authorization": "Bearer anything"}),
    ):
        assert response.status_code == 403 and "no DETEKTR_API_TOKEN" in response.json()["detail"]
    assert tokenless.http.get("/api/v1/status").status_code == 200
    cluster.processes.pop("open_api").terminate()
    assert cluster.redis.exists("detektr:registered:plates") == 0


def test_an_external_processor_is_registered_found_routed_to_and_withdrawn(cluster, api):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"name": "plates", "capabilities": ["plate_reading"], "capacity": 3}
    created = api.http.post("/api/v1/processors/register", json=body, headers=auth)
    assert created.status_code == 201 and created.json()["registered"]["queue"] == "plates"
    again = api.http.post("/api/v1/processors/register", json=body | {"capacity": 4}, headers=auth)
    assert again.status_code == 200 and again.json()["renewed"] is True
    taken = api.http.post("/api/v1/processors/register", json=body | {"name": "plodder"}, headers=auth)
    assert taken.status_code == 409

    got = api.http.get("/api/v1/processors/plates").json()
    assert (got["registered"], got["capacity"], got["capabilities"]) == (True, 4, ["plate_reading"])
    found = api.http.get("/api/v1/processors/search", params={"capability": "plate_reading"}).json()
    assert [p["name"] for p in found["processors"]] == ["plates"]
    listed = {p["name"] for p in api.http.get("/api/v1/processors").json()["processors"]}
    assert {"plates", "plodder"} <= listed

    send(cluster, 3, ("cam-plates",), capability="plate_reading")  # ingest routes to it as to a live processor
    wait_for(lambda: sum(cluster.redis.llen(q) for q in celery_queue_lists("plates")) > 0, 20,
             message="a task on the external processor's queue")
    assert value(scrape_api(api), "detektr_processor_capacity", processor="plates") == 4

    assert api.http.delete("/api/v1/processors/plates", headers=auth).status_code == 200
    assert api.http.get("/api/v1/processors/plates").status_code == 404
    assert api.http.delete("/api/v1/processors/plates", headers=auth).status_code == 404

    lapsing = api.http.post("/api/v1/processors/register", json=body | {"name": "blinker", "ttl_s": 1}, headers=auth)
    assert lapsing.status_code == 201 and api.http.get("/api/v1/processors/blinker").status_code == 200
    wait_for(lambda: api.http.get("/api/v1/processors/blinker").status_code == 404, 10, 0.2,
             message="a registration with ttl_s to lapse")


def scrape_api(api: Api) -> str:
    response = api.http.get("/metrics")
    assert response.status_code == 200
    return response.text


def test_an_uploaded_frame_is_processed(cluster, api):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    raw = api.http.post("/api/v1/frames", params={"camera": "door", "capabilities": "plodding", "priority": 5},
                        content=jpeg(seed=7), headers=auth | {"Content-Type": "image/jpeg"})
    assert raw.status_code == 202, raw.text
    form = api.http.post("/api/v1/frames", params={"camera": "door", "capabilities": "plodding",
                                                   "metadata": '{"zone": "porch"}'},
                         files={"file": ("door.png", png(), "image/png")}, headers=auth)
    assert form.status_code == 202, form.text
    assert (form.json()["format"], form.json()["width"], form.json()["height"]) == ("png", 64, 48)
    wanted = {raw.json()["frame_id"], form.json()["frame_id"]}

    def published() -> set[str]:
        return {r["frame_id"] for r in results(cluster.redis, "results:plodder")} & wanted

    wait_for(lambda: published() == wanted, 30, message="results of the uploaded frames")


def png() -> bytes:
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".png", np.full((48, 64, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


def huge_jpeg() -> bytes:
    """A real JPEG whose header claims 60000 x 60000 pixels."""
    data = bytearray(jpeg())
    sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    return bytes(data)


def test_hostile_requests_get_a_4xx_with_a_reason_never_a_500(cluster, api):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    frames = "/api/v1/frames"
    register = "/api/v1/processors/register"
    hostile = [
        ("POST", frames, {"content": jpeg()}, 422),  # no camera
        ("POST", frames + "?camera=x", {"content": b"not an image at all"}, 415),
        ("POST", frames + "?camera=x", {"content": b""}, 400),
        ("POST", frames + "?camera=x", {"content": b"\xff\xd8\xff" + os.urandom(500) + b"\xff\xd9"}, 422),
        ("POST", frames + "?camera=x", {"content": huge_jpeg()}, 422),
        ("POST", frames + "?camera=x", {"content": b"\xff\xd8\xff" + bytes(API_MAX_BYTES)}, 413),
        ("POST", frames + "?camera=../../etc/passwd", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&priority=99", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&priority=high", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&metadata=%7Bnot-json", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&metadata=%5B1%5D", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&metadata=" + "%7B%22a%22%3A" * 40 + "1" + "%7D" * 40, {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&timestamp=yesterday", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&format=gif", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&format=raw&width=10&height=10", {"content": b"\0" * 7}, 422),
        ("POST", frames + "?camera=x&capabilities=bad%20cap", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x&frame_id=%00", {"content": jpeg()}, 422),
        ("POST", frames + "?camera=x", {"files": {"a": ("a.jpg", jpeg()), "b": ("b.jpg", jpeg())}}, 400),
        ("POST", frames + "?camera=x", {"content": b"--zz\r\ngarbage",
                                        "headers": {"Content-Type": "multipart/form-data; boundary=zz"}}, 400),
        ("POST", frames + "?camera=x", {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}}, 400),
        ("POST", register, {"content": b"\xff\xfe\x00", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", register, {"content": b""}, 422),
        ("POST", register, {"json": []}, 422),
        ("POST", register, {"json": {"name": "Bad Name", "capabilities": ["c"], "capacity": 1}}, 422),
        ("POST", register, {"json": {"name": "ok", "capabilities": ["c"], "capacity": 0}}, 422),
        ("POST", register, {"json": {"name": "ok", "capabilities": [], "capacity": 1}}, 422),
        ("POST", register, {"json": {"name": "ok", "capabilities": ["c"], "capacity": 1, "pickle": "x"}}, 422),
        ("POST", register, {"json": {"name": "ok", "capabilities": ["c"], "capacity": 1, "queue": "maintenance"}},
         422),
        ("POST", register, {"json": {"name": "ok", "capabilities": ["c"], "capacity": 1,
                                     "result_stream": "detektr:workers"}}, 422),
        ("POST", register, {"json": {"name": "ok", "capabilities": ["c" * 65], "capacity": 1}}, 422),
        ("GET", "/api/v1/processors/Not%20A%20Name", {}, 422),
        ("GET", "/api/v1/processors/" + "a" * 300, {}, 422),
        ("GET", "/api/v1/processors/search", {}, 422),
        ("GET", "/api/v1/processors/search?capability=" + "x" * 100, {}, 422),
        ("DELETE", "/api/v1/processors/%2e%2e", {}, 422),
        ("GET", "/api/v1/nothing-here", {}, 404),
        ("PUT", "/api/v1/processors", {}, 405),
        ("GET", "/api/v1/processors/search?capability=%ff%fe", {}, 422),
    ]
    wrong = []
    for method, path, options, expected in hostile:
        options = dict(options)
        headers = auth | options.pop("headers", {})
        response = api.http.request(method, path, headers=headers, **options)
        if response.status_code != expected or not isinstance(response.json().get("detail"), (str, list)):
            wrong.append((method, path[:60], str(options)[:60], response.status_code, response.text[:120]))
    assert wrong == []
    for header in ("Bearer", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 5000, f"Bearer {TOKEN} extra"):
        response = api.http.post(register, json={"name": "ok", "capabilities": ["c"], "capacity": 1},
                                 headers={"Authorization": header})
        assert response.status_code in (401, 403), header[:20]
    assert api.process.poll() is None and api.http.get("/health").status_code == 200
    assert cluster.redis.exists("detektr:registered:ok") == 0


def test_status_watch_refreshes_in_place_and_exits_0_on_ctrl_c(cluster, api):
    import pty
    import select
    import signal

    leader, follower = pty.openpty()
    # as in a terminal's foreground: Ctrl-C's SIGINT is not ignored (a shell's background job inherits it ignored)
    foreground = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.argv[1], sys.argv[1:])")
    process = subprocess.Popen([sys.executable, "-c", foreground, str(BIN / "detektr"), "status", "--watch",
                                "--interval", "0.3"], stdin=follower, stdout=follower, stderr=follower,
                               env=dict(cluster.env, COLUMNS="120", LINES="60", TERM="xterm"))
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 30
    while seen.count(b"Ctrl-C to stop") < 3 and time.monotonic() < deadline:
        try:
            seen += os.read(leader, 65536)
        except OSError:
            break
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:  # a terminal keeps reading: never a full pty
        if select.select([leader], [], [], 0.1)[0]:
            try:
                seen += os.read(leader, 65536)
            except OSError:
                break
    assert process.wait(1) == 0
    os.close(leader)
    assert seen.count(b"Ctrl-C to stop") >= 3
    assert b"\x1b[1A" in seen or b"\x1b[A" in seen or b"\x1b[2K" in seen  # the cursor goes back up: in place
    assert b"plodder" in seen

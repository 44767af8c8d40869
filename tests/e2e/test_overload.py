"""Overload: at five times a processor's capacity, backpressure shows, live video is shed (and counted),
work that must see every frame pauses ingest instead, nothing crashes and the books balance."""

from __future__ import annotations

import subprocess
import time

import pytest

from detektr.config import load_settings
from detektr.status import collect_status
from tests.conftest import BIN, Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e

CLUSTER_ENV = {"DETEKTR_BACKPRESSURE__LIMIT_PER_WORKER": "5", "DETEKTR_BEAT__PROCESSORS_INTERVAL_S": "0.3"}


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Cluster:
    cluster.worker("plodder")
    cluster.worker("archiver")
    cluster.worker("maintenance")
    cluster.beat(interval_s=1.0)
    cluster.ingest()
    cluster.wait_live("plodder", "archiver")
    return cluster


def status(cluster: Cluster) -> dict:
    return collect_status(cluster.redis, load_settings(redis_url=cluster.url))


def settled_books(cluster: Cluster, processor: str, routed_at_least: int) -> dict:
    def settled():
        books = status(cluster)["accounting"]["processors"].get(processor)
        return books if books and books["in_flight"] == 0 and books["routed"] >= routed_at_least else None

    return wait_for(settled, timeout_s=60, message=f"every {processor} frame to end")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (a worker's pool), in MiB."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as status_file:
                total += next(int(line.split()[1]) for line in status_file if line.startswith("VmRSS")) / 1024
            with open(f"/proc/{current}/task/{current}/children") as children:
                todo += [int(child) for child in children.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def test_live_video_at_five_times_capacity_is_shed_with_every_skipped_frame_counted(running):
    # plodder takes 20 ms a frame (50 frames/s); 4 cameras at 60 frames/s each offer 240 frames/s, for 30 s.
    started = time.monotonic()
    inject = subprocess.Popen([str(BIN / "detektr"), "inject", "--capabilities", "plodding", "--rate", "60",
                               "--cameras", "4", "--duration", "30"], env=running.env,
                              stdout=subprocess.PIPE, text=True)
    level = wait_for(lambda: status(running)["backpressure"].get("plodder", {}).get("level") in ("high", "critical"),
                     timeout_s=10, interval_s=0.2, message="backpressure to show")
    shown_s = time.monotonic() - started
    assert level and shown_s < 5
    time.sleep(max(0.0, 10 - (time.monotonic() - started)))  # warmed up: memory from here on stays flat
    pids = {name: process.pid for name, process in running.processes.items() if name in ("ingest", "plodder")}
    warm = {name: rss_mb(pid) for name, pid in pids.items()}
    out, _ = inject.communicate(timeout=90)
    late = {name: rss_mb(pid) for name, pid in pids.items()}
    assert all(late[name] <= warm[name] * 1.25 + 20 for name in pids), (warm, late)
    seen = status(running)
    print(f"\noverload: backpressure shown {shown_s:.1f} s after the start; memory MiB after warm-up "
          f"{warm}, at the end {late}; server {seen['server']}")
    sent = int(out.split()[1])
    books = settled_books(running, "plodder", sent)
    assert books["routed"] == sent
    assert books["routed"] == books["processed"] + books["skipped"] + books["expired"] + books["dead"]
    assert books["skipped"] > sent / 3 and books["processed"] > 0 and books["dead"] == 0
    assert books["processed"] == len(results(running.redis, "results:plodder"))
    assert all(process.poll() is None for process in running.processes.values()), "a process stopped"
    assert status(running)["server"]["used_mb"] < 600
    print(f"overload books for plodder: {books}")


def test_work_that_must_see_every_frame_pauses_ingest_and_loses_nothing(running):
    client = running.redis
    sent = producer(client).add_many([(f"cam{i % 4}", jpeg(seed=i), {"capabilities": ["archiving"]})
                                      for i in range(200)])
    wait_for(lambda: status(running)["backpressure"].get("archiver", {}).get("level") == "critical",
             timeout_s=10, interval_s=0.1, message="the archiver's queue to fill")
    books = settled_books(running, "archiver", 200)
    assert books["routed"] == books["processed"] == 200 and books["skipped"] == 0
    assert {e["frame_id"] for e in results(client, "results:archiver")} == set(sent)
    assert status(running)["accounting"]["input"]["trimmed_unread"] == 0


def test_an_urgent_camera_stays_fast_while_ordinary_ones_overload_the_processor(running):
    import threading

    client = running.redis
    stop = threading.Event()

    def camera(name: str, priority: int, fps: float) -> None:
        p = producer(client)
        frame = jpeg(seed=priority)
        while not stop.is_set():
            p.add(name, frame, capabilities=["plodding"], priority=priority)
            stop.wait(1 / fps)

    cameras = [threading.Thread(target=camera, args=("urgent", 9, 20)),
               *(threading.Thread(target=camera, args=(f"ordinary{i}", 0, 60)) for i in range(3))]
    for thread in cameras:
        thread.start()
    stop.wait(8)
    stop.set()
    for thread in cameras:
        thread.join()
    settled_books(running, "plodder", 1)

    def p95(camera_id: str) -> float:
        latencies = sorted(float(e["latency_ms"]) for e in results(client, "results:plodder")
                           if e["camera_id"] == camera_id)
        return latencies[int(len(latencies) * 0.95)]

    urgent, ordinary = p95("urgent"), max(p95(f"ordinary{i}") for i in range(3))
    print(f"\nunder overload: p95 latency of the urgent camera {urgent:.0f} ms, of the ordinary ones {ordinary:.0f} ms")
    assert urgent < 1000 and urgent < ordinary

"""Capture in front of the real pipeline: real `detektr ingest` and a real `sample` worker process."""

from __future__ import annotations

import pytest
import redis

from detektr.capture import CaptureSupervisor
from detektr.config import load_settings
from tests.conftest import Cluster
from tests.e2e.util import dead_letters, results

from .conftest import config, running, wait_for, write_video

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline(cluster: Cluster) -> Cluster:
    """Ingest and one `sample` worker on this module's database; ingest keeps the input entries, which
    these tests read after the fact (by default it deletes each once its frame is settled)."""
    cluster.worker("sample", concurrency=1)
    cluster.ingest(DETEKTR_INGEST__KEEP_ENTRIES="true")
    cluster.wait_live("sample")
    return cluster


def _mine(client: redis.Redis, camera_id: str) -> tuple[list[dict], list[dict]]:
    """This camera's results and dead letters."""
    return ([r for r in results(client, "sample:results") if r["camera_id"] == camera_id],
            [d for d in dead_letters(client) if camera_id in str(d)])


def test_every_frame_of_a_file_gets_its_result(pipeline: Cluster, tmp_path):
    client, settings = pipeline.redis, load_settings(redis_url=pipeline.url)
    path = write_video(tmp_path / "clip.mp4", 80, 320, 240)  # more than may wait for ingest (64)
    supervisor = CaptureSupervisor(client, settings, config(
        {"id": "pipe-file", "source": str(path), "width": 160, "capabilities": ["sample_processing"]}))
    with running(supervisor):
        wait_for(lambda: len(_mine(client, "pipe-file")[0]) >= 80, timeout_s=60, message="80 results")
    got, dead = _mine(client, "pipe-file")
    assert len(got) == 80 and not dead
    assert {(r["result"]["width"], r["result"]["height"]) for r in got} == {(160, 120)}
    frames = {f[b"frame_id"].decode(): f[b"traceparent"].decode() for _, f in client.xrange(settings.input_stream)}
    assert all(r["traceparent"] == frames[r["frame_id"]] for r in got)  # one trace from capture to the result


def test_a_fast_live_camera_loses_no_frame_to_ingest_reading_it(pipeline: Cluster):
    # 500 frames/s: ingest often has not read a frame yet when the next comes, so capture deletes
    # frames while ingest reads the stream; every frame left must still have its bytes
    client, settings = pipeline.redis, load_settings(redis_url=pipeline.url)
    supervisor = CaptureSupervisor(client, settings, config(
        {"id": "pipe-live", "source": "synthetic", "fps": 500, "width": 160, "capabilities": ["sample_processing"]}))
    capture = supervisor.captures["pipe-live"]
    with running(supervisor):
        wait_for(lambda: capture.state.frames_captured >= 600, timeout_s=30, message="600 frames")
    left = [f for _, f in client.xrange(settings.input_stream) if f[b"camera_id"] == b"pipe-live"]
    wait_for(lambda: len(_mine(client, "pipe-live")[0]) >= len(left), timeout_s=30,
             message="a result for every frame left in the stream")
    got, dead = _mine(client, "pipe-live")
    assert not dead, dead[:3]  # no frame lost its bytes under ingest's feet
    assert len(got) == len(left)
    ages = [float(r["processed_at"]) - float(r["captured_at"]) for r in got]
    assert sorted(ages)[len(ages) // 2] < 1.0  # results are about fresh frames

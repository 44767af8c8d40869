"""The input stream holds only frames still owed work: inline bytes stay in their entry until the frame
is settled, then the entry goes; `DETEKTR_INGEST__KEEP_ENTRIES` keeps every entry for other readers."""

from __future__ import annotations

import time

import pytest
import redis

from detektr import keys
from detektr.config import load_settings
from detektr.input_stream import InputStream
from detektr.producer import FrameProducer
from tests.conftest import Cluster, wait_for
from tests.e2e.util import dead_letters, jpeg, producer, results

pytestmark = pytest.mark.e2e

KEPT = "frames:kept"


@pytest.fixture(scope="module", autouse=True)
def running(cluster: Cluster) -> Cluster:
    cluster.worker("alpha", concurrency=2)
    cluster.ingest()
    cluster.ingest("ingest-keeping", DETEKTR_INPUT_STREAM=KEPT, DETEKTR_INGEST__KEEP_ENTRIES="true")
    cluster.wait_live("alpha")
    return cluster


def test_entries_are_deleted_once_their_frames_are_settled_and_no_bytes_are_copied(running):
    client = running.redis
    settings = load_settings()
    p = producer(client)
    by_reference = FrameProducer(client, settings.input_stream, maxlen=1000, frame_ttl_s=60, by_reference=True)
    sent = [p.add("cam01", jpeg(seed=i), capabilities=["shared"]) for i in range(8)]
    sent += [by_reference.add("cam02", jpeg(seed=10 + i), capabilities=["shared"]) for i in range(2)]
    client.xadd(settings.input_stream, {"frame_id": "broken"})  # dead-lettered at ingest, then deleted too
    copies = set()

    def all_done():
        copies.update(client.scan_iter(match=keys.frame_bytes("cam01-*")))  # ingest never stores inline bytes
        return client.exists("results:alpha") and client.xlen("results:alpha") == len(sent)

    wait_for(all_done, timeout_s=30, message="every frame's result")
    wait_for(lambda: client.xlen(settings.input_stream) == 0, timeout_s=10, message="every entry deleted")
    assert copies == set()
    assert sorted(r["frame_id"] for r in results(client, "results:alpha")) == sorted(sent)
    assert list(client.scan_iter(match=keys.frame_refs("*"))) == []
    assert [d["reason"] for d in dead_letters(client) if d.get("stage") == "ingest"]  # the broken one, told


def test_with_keep_entries_every_entry_stays_for_other_readers(running):
    client = running.redis
    settings = load_settings()
    p = FrameProducer(client, KEPT, maxlen=settings.input_maxlen, frame_ttl_s=60)
    sent = [p.add("cam03", jpeg(seed=30 + i), capabilities=["shared"]) for i in range(6)]
    wait_for(lambda: len([r for r in results(client, "results:alpha") if r["camera_id"] == "cam03"]) == 6,
             timeout_s=30, message="the kept stream's results")
    time.sleep(0.3)
    assert client.xlen(KEPT) == 6
    assert [fields[b"frame_id"].decode() for _, fields in client.xrange(KEPT)] == sent
    assert list(client.scan_iter(match=keys.frame_refs("cam03-*"))) == []  # nothing counted, nothing to give back


def test_trimming_old_settled_entries_spares_unread_and_pending_ones(module_db_url):
    client = redis.Redis.from_url(module_db_url)
    stream, old_ms = "frames:trim-test", int((time.time() - 1000) * 1000)
    stream_in = InputStream(client, stream, "g", "c1", load_settings())
    stream_in.ensure_group()
    big = b"x" * 5000  # an entry per node, as frames are: approximate trimming then spares nothing it may take
    ids = [client.xadd(stream, {"image": big}, id=f"{old_ms + i}-0").decode() for i in range(6)]
    read = [entry_id.decode() for entry_id, _ in stream_in.read(4, 10)]
    assert read == ids[:4]
    client.xack(stream, "g", ids[0], ids[1], ids[3])  # ids[2] stays pending on its consumer

    stream_in.trim_settled(older_than_s=300)
    assert [entry_id.decode() for entry_id, _ in client.xrange(stream)] == ids[2:]  # pending and unread kept
    client.xack(stream, "g", ids[2])
    stream_in.trim_settled(older_than_s=300)
    assert [entry_id.decode() for entry_id, _ in client.xrange(stream)] == ids[3:]  # the group's position kept
    stream_in.trim_settled(older_than_s=2000)  # younger than that: nothing goes
    assert client.xlen(stream) == 3

"""Counters: declared once, refused when not declared, read back whole."""

from __future__ import annotations

import pytest
import redis

from detektr import stats


def test_every_counter_is_declared_once_with_what_it_counts_and_who_writes_it():
    seen = set()
    for counter in stats.COUNTERS:
        assert (counter.scope, counter.name) not in seen
        seen.add((counter.scope, counter.name))
        assert counter.counts and counter.written_by
    assert "duplicates" in stats.names("ingest") and "latency_ms_sum" not in stats.names("processor")


def test_writers_refuse_an_undeclared_counter_and_readers_return_every_declared_one(module_db_url):
    client = redis.Redis.from_url(module_db_url)
    with pytest.raises(ValueError, match="not a declared camera counter"):
        stats.count_camera(client, "cam1", "frames_in")
    pipe = client.pipeline(transaction=False)
    stats.count_camera(pipe, "cam1", "in", 3)
    stats.count_processor(pipe, "face", "retries")
    stats.count_ingest(pipe, "duplicates", 2)
    pipe.execute()
    camera = stats.read_camera(client, "cam1")
    assert list(camera) == list(stats.names("camera")) and camera["in"] == 3 and camera["dead"] == 0
    assert stats.read_processor(client, "face")["retries"] == 1
    assert stats.read_ingest(client)["duplicates"] == 2

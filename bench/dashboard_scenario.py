"""A processor for bench/render_dashboard.py's scenario: a lens check that takes 40 ms a frame and fails on cue.

It stands for a real detector whose model is slow (so that extra load backs its queue up) and
that can break (so that its circuit breaker opens): while the key `bench:lens-check:failing`
exists, every attempt raises.
"""

from __future__ import annotations

import os
import time

import redis

from detektr import Frame, processor

FAILING_KEY = "bench:lens-check:failing"


def _connect() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


@processor("lens-check", capabilities=["lens_check"], capacity=1, max_retries=1, setup=_connect)
def lens_check(frame: Frame, client: redis.Redis) -> dict:
    """40 ms of work per frame; raises while the scenario says the lens check is broken."""
    time.sleep(0.04)
    if client.exists(FAILING_KEY):
        raise RuntimeError("lens check failed (scripted by the dashboard scenario)")
    return {"lens": "ok", "width": frame.width}

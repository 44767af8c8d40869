"""Small helpers for end-to-end tests: frames to send, streams to read."""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np

from detektr.config import load_settings
from detektr.keys import DEAD_LETTER_STREAM
from detektr.producer import FrameProducer


def jpeg(width: int = 160, height: int = 120, seed: int = 0) -> bytes:
    """A real JPEG of random blocks."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def producer(client: Any) -> FrameProducer:
    """A producer on the configured input stream."""
    settings = load_settings()
    return FrameProducer(client, settings.input_stream, maxlen=settings.input_maxlen, frame_ttl_s=60)


def results(client: Any, stream: str) -> list[dict[str, Any]]:
    """Every entry of a result stream, decoded, with `result` parsed."""
    entries = []
    for _, fields in client.xrange(stream):
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        entry["result"] = json.loads(entry["result"])
        entries.append(entry)
    return entries


def dead_letters(client: Any) -> list[dict[str, str]]:
    """Every dead-letter entry, decoded."""
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(DEAD_LETTER_STREAM)]

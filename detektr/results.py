"""Publishing a processor's result to its stream, exactly once per frame and processor.

Delivery into workers is at-least-once (late acks, redelivery of a lost worker's task, ingest
replicas reclaiming entries), so the publish is a Lua script: it sets a per-(processor, frame)
marker and appends the result only if the marker was not there yet. A duplicate delivery
therefore does the work again but never publishes twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from . import keys
from .frame import FrameRef

_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
  redis.call('HINCRBY', KEYS[3], 'processed', 1)
  redis.call('HINCRBYFLOAT', KEYS[3], 'latency_ms_sum', ARGV[3])
  redis.call('HINCRBY', KEYS[4], 'processed', 1)
  return id
end
return false
"""


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def encode_result(result: Any) -> str:
    """Serialize a processor's return value as JSON (numpy scalars and arrays become lists)."""
    return json.dumps(result, default=_json_default, allow_nan=False, separators=(",", ":"))


class ResultPublisher:
    """Appends results to processors' result streams, once per (processor, frame)."""

    def __init__(self, redis: Any, *, stream_maxlen: int, dedupe_ttl_s: int) -> None:
        self._redis = redis
        self._script = redis.register_script(_PUBLISH_ONCE)
        self._maxlen = stream_maxlen
        self._dedupe_ttl_s = dedupe_ttl_s

    def publish_many(
        self, processor: str, result_stream: str, results: list[tuple[FrameRef, str, dict[str, str] | None]]
    ) -> list[bool]:
        """Publish several frames' results in one round trip; False for each one already published."""
        pipe = self._redis.pipeline(transaction=False)
        processed_at = time.time()
        for ref, result_json, extra in results:
            latency_ms = max(0.0, (processed_at - ref.timestamp) * 1000.0)
            fields = {
                "frame_id": ref.frame_id,
                "camera_id": ref.camera_id,
                "processor": processor,
                "result": result_json,
                "captured_at": f"{ref.timestamp:.6f}",
                "processed_at": f"{processed_at:.6f}",
                "latency_ms": f"{latency_ms:.3f}",
            }
            if ref.traceparent:
                fields["traceparent"] = ref.traceparent
            fields.update(extra or {})
            args: list[Any] = [self._dedupe_ttl_s, self._maxlen, f"{latency_ms:.3f}"]
            for key, value in fields.items():
                args += [key, value]
            self._script(
                keys=[
                    keys.result_published(processor, ref.frame_id),
                    result_stream,
                    keys.processor_stats(processor),
                    keys.camera_stats(ref.camera_id),
                ],
                args=args,
                client=pipe,
            )
        return [reply is not None for reply in pipe.execute()]

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

from . import keys, stats
from .frame import FrameRef
from .metrics import observe_latencies
from .outcomes import RELEASE_BYTES_LUA

# One call publishes a whole list of frames' results. KEYS: the result stream, the processor's
# stats hash, then per frame its marker key (the pair's end, see detektr.outcomes), its camera's
# stats hash, its reference count and where its bytes are (a key, or the input stream). ARGV: marker
# TTL, stream MAXLEN, the processor, the time it published (processed_at); then per frame the entry id
# holding its bytes ('' for a key), its owners (`FrameRef.owners`), its frame_id, camera_id, result,
# captured_at and latency_ms, the number of further field/value pairs (traceparent, a processor's
# own fields) and those pairs; then any number of (counter, amount) pairs added to the processor's
# stats. It adds the `processed` counter of the processor and of each frame's camera (declared in
# detektr.stats), and gives back the bytes of a frame whose last pair it ends. Returns, per frame,
# the new entry's id or 0 where the frame's pair had already ended.
_PUBLISH_ONCE = RELEASE_BYTES_LUA + """
local published, fresh, cameras = {}, 0, {}
local arg = 5
for i = 0, (#KEYS - 2) / 4 - 1 do
  local k = 3 + 4 * i
  local more = tonumber(ARGV[arg + 7])
  local last = arg + 7 + 2 * more
  if redis.call('SET', KEYS[k], 'processed', 'NX', 'EX', ARGV[1]) then
    published[i + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'frame_id', ARGV[arg + 2],
      'camera_id', ARGV[arg + 3], 'processor', ARGV[3], 'result', ARGV[arg + 4], 'captured_at', ARGV[arg + 5],
      'processed_at', ARGV[4], 'latency_ms', ARGV[arg + 6], unpack(ARGV, arg + 8, last))
    cameras[KEYS[k + 1]] = (cameras[KEYS[k + 1]] or 0) + 1
    fresh = fresh + 1
    release_bytes(KEYS[k + 2], KEYS[k + 3], ARGV[arg], tonumber(ARGV[arg + 1]))
  else
    published[i + 1] = 0
  end
  arg = last + 1
end
for camera, count in pairs(cameras) do
  redis.call('HINCRBY', camera, 'processed', count)
end
if fresh > 0 then
  redis.call('HINCRBY', KEYS[2], 'processed', fresh)
end
while arg < #ARGV do
  redis.call('HINCRBY', KEYS[2], ARGV[arg], ARGV[arg + 1])
  arg = arg + 2
end
release_all()
return published
"""


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_ENCODER = json.JSONEncoder(default=_json_default, allow_nan=False, separators=(",", ":"))


def encode_result(result: Any) -> str:
    """Serialize a processor's return value as JSON (numpy scalars and arrays become lists)."""
    return _ENCODER.encode(result)


class ResultPublisher:
    """Appends results to processors' result streams, once per (processor, frame)."""

    def __init__(self, redis: Any, *, stream_maxlen: int, dedupe_ttl_s: int) -> None:
        self._redis = redis
        self._script = redis.register_script(_PUBLISH_ONCE)
        self._maxlen = stream_maxlen
        self._dedupe_ttl_s = dedupe_ttl_s

    def publish_many(
        self,
        processor: str,
        result_stream: str,
        results: list[tuple[FrameRef, str, dict[str, str] | None]],
        counters: dict[str, int] | None = None,
    ) -> list[bool]:
        """Publish several frames' results with one script call; False for each one already published.

        `counters` are added to the processor's stats hash in the same call.
        """
        if not results and not counters:
            return []
        processed_at = time.time()
        script_keys: list[str] = [result_stream, keys.processor_stats(processor)]
        args: list[Any] = [self._dedupe_ttl_s, self._maxlen, processor, f"{processed_at:.6f}"]
        for ref, result_json, extra in results:
            more: list[str] = []
            if ref.traceparent:
                more += ["traceparent", ref.traceparent]
            for item in (extra or {}).items():
                more += item
            holder, entry = ref.bytes_holder
            script_keys += [keys.result_published(processor, ref.frame_id), keys.camera_stats(ref.camera_id),
                            keys.frame_refs(ref.frame_id), holder]
            args += [entry, ref.owners, ref.frame_id, ref.camera_id, result_json, f"{ref.timestamp:.6f}",
                     f"{max(0.0, (processed_at - ref.timestamp) * 1000.0):.3f}", len(more) // 2, *more]
        for name, amount in (counters or {}).items():
            args += [stats.checked("processor", name), amount]
        fresh = [reply != 0 for reply in self._script(keys=script_keys, args=args)]
        observe_latencies(processor, [(ref.camera_id, processed_at - ref.timestamp)
                                      for (ref, _, _), new in zip(results, fresh) if new])
        return fresh

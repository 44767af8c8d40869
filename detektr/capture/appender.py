"""Appending one camera's frames to the input stream, keeping a live camera from queueing stale frames."""

from __future__ import annotations

from collections import deque
from typing import Any

from .. import keys
from ..input_stream import entry_order
from ..producer import FrameProducer
from .state import _text


def stream_id_after(first: str, second: str) -> bool:
    """Whether stream entry id `first` comes after `second`."""
    return entry_order(first) > entry_order(second)


_MAKE_ROOM = """
-- KEYS[1]: the input stream; KEYS[2..]: bytes keys of this camera's frames not yet known as taken.
-- ARGV[1]: ingest's consumer group; ARGV[2]: how many untaken frames to keep; ARGV[3..]: their entry
-- ids, oldest first. Frames past ingest's last-delivered id are untaken; the oldest beyond the keep
-- count are deleted with their bytes. Returns {last-delivered id, deleted entry ids...}.
local last = '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, group in ipairs(groups) do
    local name, id
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1] elseif group[i] == 'last-delivered-id' then id = group[i + 1] end
    end
    if name == ARGV[1] then last = id end
  end
end
local last_ms, last_seq = string.match(last, '^(%d+)-(%d+)$')
last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
local untaken = {}
for i = 3, #ARGV do
  local ms, seq = string.match(ARGV[i], '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if ms > last_ms or (ms == last_ms and seq > last_seq) then table.insert(untaken, i) end
end
local result = {last}
for j = 1, #untaken - tonumber(ARGV[2]) do
  local i = untaken[j]
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then table.insert(result, ARGV[i]) end
  redis.call('DEL', KEYS[i - 1])
end
return result
"""


class StreamAppender:
    """Appends one camera's frames by reference and tracks those still waiting for ingest.

    A live camera keeps at most `limit` frames waiting (older untaken ones are deleted with their
    bytes, atomically against ingest reading them); a file waits instead (`room`).
    """

    def __init__(self, redis: Any, producer: FrameProducer, group: str, limit: int, live: bool) -> None:
        self.redis = redis
        self.producer = producer
        self.group = group
        self.limit = limit
        self.live = live
        self.waiting: deque[tuple[str, str]] = deque()  # (entry id, bytes key), oldest first
        self._script = redis.register_script(_MAKE_ROOM)

    def _call(self, keep: int, client: Any = None) -> Any:
        ids = [entry for entry, _ in self.waiting]
        byte_keys = [key for _, key in self.waiting]
        return self._script(keys=[self.producer.stream, *byte_keys], args=[self.group, keep, *ids], client=client)

    def _settle(self, result: list[Any]) -> int:
        last, deleted = _text(result[0]), {_text(entry) for entry in result[1:]}
        self.waiting = deque(
            (entry, key) for entry, key in self.waiting if entry not in deleted and stream_id_after(entry, last)
        )
        return len(deleted)

    def room(self) -> bool:
        """Whether a file's next frame may be appended without passing the limit (live: always; append drops)."""
        if self.live or len(self.waiting) < self.limit:
            return True
        self._settle(self._call(keep=len(self.waiting)))
        return len(self.waiting) < self.limit

    def append(self, camera_id: str, data: bytes, **options: Any) -> tuple[str, int]:
        """Append one frame in one round trip; return its frame id and how many stale frames were dropped."""
        fields = self.producer.entry(camera_id, data, **options)
        fields["image_key"] = keys.frame_bytes(fields["frame_id"])
        pipe = self.redis.pipeline(transaction=False)
        check = self.live and bool(self.waiting)  # a file's waiting frames are settled by `room` alone
        if check:
            self._call(keep=self.limit - 1, client=pipe)
        pipe.set(fields["image_key"], data, ex=self.producer.frame_ttl_s)
        pipe.xadd(self.producer.stream, fields, maxlen=self.producer.maxlen, approximate=True)
        results = pipe.execute()
        dropped = self._settle(results[0]) if check else 0
        self.waiting.append((_text(results[-1]), fields["image_key"]))
        return fields["frame_id"], dropped

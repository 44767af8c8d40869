"""How a frame ends for a processor: exactly one terminal state per (frame, processor) pair.

A frame routed to a processor ends as `processed` (its result, `detektr.results`), or as
`dead` (a dead letter with the reason), `gated_out` (a closed gate kept it back), `expired`
(past its deadline) or `skipped` (shed under load). Whichever comes first sets the pair's
marker (the same marker the exactly-once publish sets), so a frame delivered twice never ends
twice: never a result and a dead letter, never two dead letters.

Ending a pair also gives back the frame's bytes (the key ingest stored them under, or the
input-stream entry they came in), when detektr owns them: the task says how many pairs share
them (`FrameRef.owners`). The end of a frame's only pair deletes them; for a frame shared by
several, ingest stores a reference count (one per pair it routed), each ending takes one, and
the last one deletes the bytes. So the server holds the bytes of frames still owed work, not of
every frame for its TTL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import keys, stats
from .frame import FrameRef

log = logging.getLogger(__name__)

RELEASE_BYTES_LUA = """
local gone_keys, gone_entries = {}, {}
local function release_bytes(refs, data, entry, owners)
  if owners == 1 or (owners > 1 and redis.call('EXISTS', refs) == 1 and redis.call('DECR', refs) <= 0) then
    if owners > 1 then
      redis.call('DEL', refs)
    end
    if entry == '' then
      gone_keys[#gone_keys + 1] = data
    else
      local ids = gone_entries[data]
      if ids == nil then
        ids = {}
        gone_entries[data] = ids
      end
      ids[#ids + 1] = entry
    end
  end
end
local function release_all()
  for start = 1, #gone_keys, 500 do
    redis.call('DEL', unpack(gone_keys, start, math.min(start + 499, #gone_keys)))
  end
  for stream, ids in pairs(gone_entries) do
    for start = 1, #ids, 500 do
      redis.call('XDEL', stream, unpack(ids, start, math.min(start + 499, #ids)))
    end
  end
end
"""
"""Giving back frames' bytes when their last (frame, processor) pair ends: the start of this script and the
publish one. `release_bytes(refs, data, entry, owners)` for each pair that ends: `data` is the key of the
bytes, or the input stream with `entry` the id of the entry holding them (`FrameRef.bytes_holder`); `entry`
is '' for a key. `owners` is `FrameRef.owners` (a number): 0 leaves the bytes alone, 1 deletes them, more
takes one from the reference count `refs` and deletes them at 0. `release_all()`, at the end, deletes
what the call gave back in one DEL and one XDEL per stream."""

# KEYS[1]: the dead-letter stream; then per ending 5 keys: the pair's marker, the processor's and the
# camera's stats hashes, the frame's reference count and where its bytes are (a key or the input
# stream). ARGV[1]: marker TTL, ARGV[2]: dead-letter MAXLEN; then per ending: the state, the entry id
# holding the bytes ('' for a key), the frame's owners (`FrameRef.owners`), the number of dead-letter
# field/value pairs (0: none) and the pairs. Returns 1 per ending that was the pair's first, 0 where
# it had ended before.
_END_ONCE = RELEASE_BYTES_LUA + """
local ended = {}
local arg = 3
for i = 0, (#KEYS - 1) / 5 - 1 do
  local k = 2 + 5 * i
  local state, entry, owners, npairs = ARGV[arg], ARGV[arg + 1], tonumber(ARGV[arg + 2]), tonumber(ARGV[arg + 3])
  local first, last = arg + 4, arg + 3 + 2 * npairs
  arg = last + 1
  if redis.call('SET', KEYS[k], state, 'NX', 'EX', ARGV[1]) then
    redis.call('HINCRBY', KEYS[k + 1], state, 1)
    redis.call('HINCRBY', KEYS[k + 2], state, 1)
    if npairs > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, first, last))
    end
    release_bytes(KEYS[k + 3], KEYS[k + 4], entry, owners)
    ended[#ended + 1] = 1
  else
    ended[#ended + 1] = 0
  end
end
release_all()
return ended
"""


@dataclass(frozen=True)
class Ending:
    """One (frame, processor) pair that ends without a result; `dead_letter` is the entry to add, if any."""

    processor: str
    ref: FrameRef
    state: str
    dead_letter: dict[str, str] | None = None


def ended_with(processor: str, ref: FrameRef, state: str, dead_letter: dict[str, str] | None = None) -> list[Ending]:
    """The pair of `processor` and the frame, and the pairs of the processors waiting on its gate: all end alike."""
    return [Ending(processor, ref, state, dead_letter),
            *(Ending(follower.processor, ref, state, dead_letter and {**dead_letter, "processor": follower.processor})
              for follower in ref.then)]


def past_deadline(ingested_at: float, now: float, max_age_ms: int) -> bool:
    """Whether a frame accepted at `ingested_at` has waited longer than `max_age_ms` (0: no deadline)."""
    return max_age_ms > 0 and (now - ingested_at) * 1000 > max_age_ms


class FrameOutcomes:
    """Ends (frame, processor) pairs once each, with their counters, dead letters and the frames' bytes."""

    def __init__(self, redis: Any, *, stream_maxlen: int, dedupe_ttl_s: int) -> None:
        self._script = redis.register_script(_END_ONCE)
        self._maxlen = stream_maxlen
        self._ttl_s = dedupe_ttl_s

    def end(self, endings: Sequence[Ending]) -> list[bool]:
        """End each pair in one script call; False for a pair that had already ended (a duplicate delivery)."""
        if not endings:
            return []
        script_keys: list[str] = [keys.DEAD_LETTER_STREAM]
        args: list[Any] = [self._ttl_s, self._maxlen]
        for ending in endings:
            stats.checked("processor", ending.state)
            ref = ending.ref
            holder, entry = ref.bytes_holder
            script_keys += [keys.result_published(ending.processor, ref.frame_id),
                            keys.processor_stats(ending.processor), keys.camera_stats(ref.camera_id),
                            keys.frame_refs(ref.frame_id), holder]
            fields = ending.dead_letter or {}
            args += [ending.state, entry, ref.owners, len(fields)]
            for pair in fields.items():
                args += pair
        ended = [reply == 1 for reply in self._script(keys=script_keys, args=args)]
        for ending, first in zip(endings, ended):
            if first and ending.dead_letter:
                log.warning("dead letter: stage=%s frame_id=%s processor=%s reason=%s", ending.dead_letter["stage"],
                            ending.ref.frame_id, ending.processor, ending.dead_letter["reason"])
        return ended

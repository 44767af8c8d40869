"""Frame-id claims: ingest takes each frame id once, and checks a producer's `image_key` on the way.

A frame id is claimed by its input entry (`keys.frame_seen`, the entry id as value, for
`DETEKTR_RESULTS__DEDUPE_TTL_S`): another entry with the same id is a duplicate, and the same
entry read again (reclaimed from a dead consumer) keeps its claim. One script call claims a whole
batch: a pipeline of one `SET` per frame cost ingest about 10 µs of CPU per frame in redis-py,
the script about 2 (Valkey's own time rises by about 2 µs per frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import keys

# KEYS: per frame its claim key (`keys.frame_seen`), followed by its `image_key` where it has one.
# ARGV[1]: the claim's TTL; then per frame its entry id and '1' if an `image_key` follows its claim
# key ('0' if not). Returns per frame the entry id that already held the claim (nil: this entry took
# it), then, for a frame with an `image_key`, the key's length (0: no such key). A key of another
# type fails its own frame only: its place holds the error.
_CLAIM = """
local replies, k = {}, 1
for i = 2, #ARGV, 2 do
  replies[#replies + 1] = redis.pcall('SET', KEYS[k], ARGV[i], 'NX', 'GET', 'EX', ARGV[1])
  k = k + 1
  if ARGV[i + 1] == '1' then
    replies[#replies + 1] = redis.pcall('STRLEN', KEYS[k])
    k = k + 1
  end
end
return replies
"""


@dataclass(frozen=True)
class Claim:
    """What claiming one frame id found."""

    holder: bytes | Exception | None
    """The entry id that already held the claim (None: this entry took it), or why it could not be claimed."""
    image_size: int | Exception | None = None
    """The length of the frame's `image_key` (0: no such key; None: the frame has none), or why it is unreadable."""

    def duplicate(self, entry_id: str) -> bool:
        """Whether another entry already holds the frame id (the same entry read again keeps its claim)."""
        return isinstance(self.holder, bytes) and self.holder.decode() != entry_id


class FrameIdClaims:
    """Claims frame ids for their entries, a batch per script call."""

    def __init__(self, client: Any, ttl_s: int) -> None:
        self._script = client.register_script(_CLAIM)
        self._ttl_s = ttl_s

    def claim(self, frames: list[tuple[str, str, str | None]]) -> list[Claim]:
        """Claim each (frame_id, entry_id, image_key or None), in order."""
        if not frames:
            return []
        script_keys: list[str] = []
        args: list[Any] = [self._ttl_s]
        for frame_id, entry_id, image_key in frames:
            script_keys.append(keys.frame_seen(frame_id))
            if image_key is not None:
                script_keys.append(image_key)
            args += [entry_id, "0" if image_key is None else "1"]
        replies = iter(self._script(keys=script_keys, args=args))
        return [Claim(next(replies), next(replies) if image_key is not None else None)
                for _, _, image_key in frames]


def refusal(claim: Claim, entry_id: str, frame_id: str, image_key: str | None, max_bytes: int) -> str | None:
    """Why a claimed frame is refused (a dead letter's reason), or None: it is this entry's to route.

    An `image_key` of another type is left to the caller, which asks the server what the key holds.
    """
    if isinstance(claim.holder, Exception):
        return f"frame_id could not be claimed: {claim.holder}"
    if claim.duplicate(entry_id):
        return f"duplicate frame_id {frame_id!r} (first seen as entry {claim.holder.decode()})"  # type: ignore[union-attr]
    if isinstance(claim.image_size, int):
        if claim.image_size == 0:
            return f"image_key {image_key!r} does not exist"
        if claim.image_size > max_bytes:
            return f"image is {claim.image_size} bytes, more than the limit of {max_bytes}"
    return None

"""The input stream as one consumer of ingest's group sees it: reading, reclaiming, what is still unread.

Entries are read with XREADGROUP; entries left pending by a consumer that stopped are taken over
with XAUTOCLAIM after `DETEKTR_INGEST__CLAIM_IDLE_MS`. `unread` is the group's lag, with a loud
log line when it nears the stream's bound (`DETEKTR_INPUT_MAXLEN`), past which producers trim
frames before ingest reads them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from . import stats
from .config import Settings

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]

TRIM_WARNING = 0.8
"""Share of DETEKTR_INPUT_MAXLEN of unread entries at which ingest warns, and reads even while paused."""


class InputStream:
    """One consumer of ingest's group on the input stream."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str, settings: Settings) -> None:
        self.redis = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.settings = settings
        self._unread, self._unread_at = 0, 0.0

    def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` new entries for this consumer, waiting at most `block_ms` for them."""
        response = self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        return response[0][1] if response else []

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if they do not exist yet."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            log.info("created consumer group %s on %s", self.group, self.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def unread(self) -> int:
        """Entries of the input stream the group has not read yet (looked up at most every second)."""
        now = time.monotonic()
        if now - self._unread_at >= 1.0:
            self._unread_at = now
            self._unread = int((self._group() or {}).get("lag") or 0)
            if self._unread >= TRIM_WARNING * self.settings.input_maxlen:
                log.error("input stream %s has %d unread entries, near its bound of ~%d (DETEKTR_INPUT_MAXLEN): "
                          "producers trimming it drop frames before ingest reads them (counted as trimmed_unread)",
                          self.stream, self._unread, self.settings.input_maxlen)
        return self._unread

    def trim_settled(self, older_than_s: float) -> None:
        """Delete entries older than `older_than_s` that the group has read and no consumer holds.

        Entries are deleted as their frames settle; this catches those a lost task left behind (as
        frame bytes under a key expire after the same time). Unread and pending entries are never
        touched: the bound is the oldest of the age, the group's position and its oldest pending entry.
        """
        bound = (int((time.time() - older_than_s) * 1000), 0)
        group = self._group()
        if group is None:
            return
        bound = min(bound, entry_order(group["last-delivered-id"]))
        pending = self.redis.xpending(self.stream, self.group)
        if pending["pending"]:
            bound = min(bound, entry_order(pending["min"]))
        if bound > (0, 0):
            self.redis.xtrim(self.stream, minid=f"{bound[0]}-{bound[1]}", approximate=True)

    def _group(self) -> dict[str, Any] | None:
        """Ingest's group as XINFO GROUPS describes it (None when the stream has no such group)."""
        return next((g for g in self.redis.xinfo_groups(self.stream) if g["name"].decode() == self.group), None)

    def reclaim(self) -> list[Entry]:
        """Take over entries pending longer than `claim_idle_ms` on any consumer (a dead one)."""
        claimed: list[Entry] = []
        start = "0-0"
        while len(claimed) < self.settings.ingest.batch_size:
            start, entries, deleted = self._xautoclaim(start)
            claimed += [entry for entry in entries if entry[1] is not None]
            if deleted:
                self.redis.xack(self.stream, self.group, *deleted)
            if start in (b"0-0", "0-0"):
                break
        if claimed:
            log.info("reclaimed %d pending entries from dead consumers", len(claimed))
            stats.count_ingest(self.redis, "reclaimed", len(claimed))
        return claimed

    def _xautoclaim(self, start: Any) -> tuple[Any, list[Entry], list[Any]]:
        result = self.redis.xautoclaim(
            self.stream, self.group, self.consumer,
            min_idle_time=self.settings.ingest.claim_idle_ms, start_id=start,
            count=self.settings.ingest.batch_size,
        )
        next_start, entries = result[0], result[1]
        deleted = result[2] if len(result) > 2 else []
        return next_start, entries, deleted


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id (`milliseconds-sequence`) as a pair of numbers that sorts as the server sorts ids."""
    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(ms), int(seq or 0)

"""Every frame accounted for: where the input stream's entries went, and how each processor's frames ended.

At rest the books balance: `appended = read + trimmed_unread` for the input stream (plus `unread`
while ingest is behind), and for each processor `routed = processed + skipped + gated + expired +
dead` (plus `in_flight` while frames are on their way). Read from the counters (`detektr.stats`)
and the stream's own figures (XINFO); it reads, never writes.
"""

from __future__ import annotations

from typing import Any

ENDED = ("processed", "skipped", "gated_out", "expired", "dead")
"""The terminal states of a (frame, processor) pair."""


def processor_books(counters: dict[str, int]) -> dict[str, int]:
    """One processor's accounting from its counters: routed, each ending, and what is still in flight."""
    books = {"routed": counters["routed"]}
    books.update({("gated" if state == "gated_out" else state): counters[state] for state in ENDED})
    books["in_flight"] = counters["routed"] - sum(counters[state] for state in ENDED)
    return books


def input_books(appended: int, read: int, unread: int, dead: int, pending: int) -> dict[str, int]:
    """The input stream's accounting: entries added, read by ingest, trimmed before ingest read them."""
    return {"appended": appended, "read": read, "trimmed_unread": max(0, appended - read - unread), "unread": unread,
            "dead": dead, "pending": pending}


def _unread(redis: Any, stream: str, group: dict[str, Any]) -> int:
    if group.get("lag") is not None:
        return int(group["lag"])
    # The server cannot tell (entries deleted in between): count what lies after the group's position.
    return len(redis.xrange(stream, min=b"(" + group["last-delivered-id"], max="+"))


def collect_accounting(redis: Any, stream: str, group_name: str, ingest: dict[str, int],
                       counters: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The `accounting` part of `detektr status --json`, from the ingest counters and each routed processor's."""
    appended = unread = pending = 0
    if redis.exists(stream):
        appended = int(redis.xinfo_stream(stream).get("entries-added") or 0)
        for group in redis.xinfo_groups(stream):
            if group["name"].decode() == group_name:
                unread, pending = _unread(redis, stream, group), int(group["pending"])
    processors = {name: processor_books(counters[name]) for name in sorted(counters)}
    return {"input": input_books(appended, ingest["read"], unread, ingest["dead"], pending),
            "processors": processors}

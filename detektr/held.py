"""Which held messages a lost worker left behind: a pure decision, no I/O.

With late acks, kombu keeps every message delivered to a worker and not yet acknowledged in the
hash `unacked`, and its delivery time in the sorted set `unacked_index` (`keys.KOMBU_UNACKED*`).
A live worker sets the time of each message it holds to now on every heartbeat
(`detektr.worker_hooks.HeartbeatStep`); the messages of a killed worker keep their old time. Beat
(`detektr.beat.checks`) gives back, with kombu's own restore, those whose time is older than
`DETEKTR_WORKER__HELD_STALE_S`: a killed worker's frames are back in their queue within seconds
instead of after the broker's visibility timeout (which stays as the last resort).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

RESTORE_AT_MOST = 1000
"""Messages one beat check gives back at most (the next check takes the rest)."""


def stale_before(now: float, stale_s: float) -> float:
    """The time before which a held message was not vouched for by any live worker."""
    return now - stale_s


def stale_tags(index: Iterable[tuple[bytes | str, float]], now: float, stale_s: float,
               limit: int = RESTORE_AT_MOST) -> list[str]:
    """The delivery tags of `index` ((tag, time) pairs of `unacked_index`) to give back, oldest first.

    A tag is stale when its time is older than `stale_s` before `now`: no live worker has said it
    holds the message for that long. At most `limit` tags.
    """
    cutoff = stale_before(now, stale_s)
    stale = sorted((score, tag.decode() if isinstance(tag, bytes) else tag)
                   for tag, score in index if score < cutoff)
    return [tag for _, tag in stale[:max(0, limit)]]


def held_tags(delivered: Mapping[str, object], acked: Iterable[str] = ()) -> list[str]:
    """The tags a worker's channel holds: delivered and not acknowledged (kombu marks acks lazily)."""
    done = set(acked)
    return [tag for tag in list(delivered) if tag not in done]

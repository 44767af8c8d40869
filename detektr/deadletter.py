"""The dead-letter stream: every frame that could not be handled, with a stage and a reason."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from . import keys, stats
from .frame import elide_binary

Stage = Literal["ingest", "route", "process"]
log = logging.getLogger(__name__)


def dead_letter_fields(
    stage: Stage,
    reason: str,
    original: dict[Any, Any],
    *,
    frame_id: str | None = None,
    camera_id: str | None = None,
    processor: str | None = None,
) -> dict[str, str]:
    """Build one dead-letter entry: stage, reason, ids, and the original fields with binary elided."""
    entry = {f"original.{key}": value for key, value in elide_binary(original).items()}
    entry.update(stage=stage, reason=reason[:2000], failed_at=f"{time.time():.6f}")
    if frame_id is None:
        frame_id = entry.get("original.frame_id")
    if camera_id is None:
        camera_id = entry.get("original.camera_id")
    if frame_id:
        entry["frame_id"] = frame_id
    if camera_id:
        entry["camera_id"] = camera_id
    if processor:
        entry["processor"] = processor
    return entry


def add_dead_letter(pipe: Any, maxlen: int, entry: dict[str, str], count: bool = True) -> None:
    """Queue the XADD of one dead-letter entry (and its camera's counter) on a Redis pipeline (or client).

    For an entry that never reached a processor (ingest, routing). A (frame, processor) pair ends
    as dead through `detektr.outcomes`, once, with its counters.
    """
    pipe.xadd(keys.DEAD_LETTER_STREAM, entry, maxlen=maxlen, approximate=True)
    if count and entry.get("camera_id"):
        stats.count_camera(pipe, entry["camera_id"], "dead")
    log.warning(
        "dead letter: stage=%s frame_id=%s processor=%s reason=%s",
        entry["stage"], entry.get("frame_id"), entry.get("processor", "-"), entry["reason"],
    )

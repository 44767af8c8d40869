"""Appending frames to the input stream: the producer side of the contract, for detektr's own tools.

`detektr inject` and `detektr capture` use it; any other producer just follows docs/contract.md.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from . import keys


def new_frame_id(camera_id: str) -> str:
    """A unique frame id that sorts by camera."""
    return f"{camera_id}-{uuid.uuid4().hex}"


class FrameProducer:
    """Appends frames to the input stream, bounded by MAXLEN (approximate).

    With `by_reference=True` the bytes are stored under a key with a TTL and the entry carries
    `image_key`; otherwise they travel inline in the entry's `image` field.
    """

    def __init__(self, redis: Any, stream: str, *, maxlen: int, frame_ttl_s: int, by_reference: bool = False) -> None:
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen
        self.frame_ttl_s = frame_ttl_s
        self.by_reference = by_reference

    def entry(
        self,
        camera_id: str,
        data: bytes,
        *,
        fmt: str = "jpeg",
        frame_id: str | None = None,
        timestamp: float | None = None,
        priority: int = 0,
        capabilities: Iterable[str] | None = None,
        metadata: dict[str, Any] | None = None,
        traceparent: str | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Build one input-stream entry (without the image when the producer stores by reference)."""
        fields: dict[str, Any] = {
            "frame_id": frame_id or new_frame_id(camera_id),
            "camera_id": camera_id,
            "timestamp": f"{time.time() if timestamp is None else timestamp:.6f}",
            "format": fmt,
            "priority": str(priority),
        }
        if width is not None and height is not None:
            fields["width"], fields["height"] = str(width), str(height)
        if capabilities:
            fields["capabilities"] = ",".join(capabilities)
        if metadata:
            fields["metadata"] = json.dumps(metadata)
        if traceparent:
            fields["traceparent"] = traceparent
        if not self.by_reference:
            fields["image"] = data
        return fields

    def add(self, camera_id: str, data: bytes, **options: Any) -> str:
        """Append one frame; return its frame id."""
        return self.add_many([(camera_id, data, options)])[0]

    def add_many(self, frames: Iterable[tuple[str, bytes, dict[str, Any]]]) -> list[str]:
        """Append several frames in one round trip; return their frame ids."""
        pipe = self.redis.pipeline(transaction=False)
        ids = []
        for camera_id, data, options in frames:
            fields = self.entry(camera_id, data, **options)
            if self.by_reference:
                fields["image_key"] = keys.frame_bytes(fields["frame_id"])
                pipe.set(fields["image_key"], data, ex=self.frame_ttl_s)
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            ids.append(fields["frame_id"])
        pipe.execute()
        return ids

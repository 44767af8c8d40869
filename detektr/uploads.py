"""`POST /api/v1/frames`: an uploaded image becomes a frame on the input stream, checked as ingest checks it.

The body is the image itself, or a multipart form with the image as its one file. It is read up
to `DETEKTR_FRAMES__MAX_BYTES` (plus `MULTIPART_ALLOWANCE` for a form's envelope) and no
further; its size, header and dimensions are checked by the code ingest uses
(`detektr.frame.parse_entry`), and it must decode. Then it is appended with detektr's own
producer (`detektr.producer.FrameProducer`), so ingest sees what any producer sends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .config import Settings
from .errors import FrameRejected
from .frame import decode_image, parse_entry, parse_timestamp
from .imageinfo import JPEG_SOI, PNG_SIGNATURE
from .producer import FrameProducer, new_frame_id

MULTIPART_ALLOWANCE = 64 * 1024
"""Bytes a multipart form may add around the image (boundaries, part headers)."""


class UploadRefused(Exception):
    """An upload that cannot become a frame: an HTTP status and the reason, for the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class UploadOptions:
    """The query parameters of an upload."""

    camera: str
    capabilities: str | None = None
    priority: int = 0
    frame_id: str | None = None
    timestamp: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    metadata: str | None = None


def body_limit(settings: Settings) -> int:
    """The most bytes an upload's body may have."""
    return settings.frames.max_bytes + MULTIPART_ALLOWANCE


async def read_capped(chunks: AsyncIterator[bytes], declared_length: str | None, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (413 beyond it, before reading when its length says so)."""
    if declared_length is not None:
        if not declared_length.isdigit():
            raise UploadRefused(400, "Content-Length is not a number")
        if int(declared_length) > limit:
            raise UploadRefused(413, f"body is {declared_length} bytes, more than the limit of {limit}")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise UploadRefused(413, f"body is more than the limit of {limit} bytes")
    return bytes(body)


async def image_from_form(headers: Any, body: bytes) -> bytes:
    """The one file of a multipart form."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=1, max_fields=16, max_part_size=64 * 1024).parse()
    except (MultiPartException, ValueError, KeyError) as exc:
        raise UploadRefused(400, f"not a well-formed multipart form: {exc}") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if len(files) != 1:
        raise UploadRefused(400, f"a multipart upload carries one file (the image), not {len(files)}")
    try:
        return await files[0].read()
    finally:
        await form.close()


def image_format(data: bytes, declared: str | None) -> str:
    """The image's format: as declared, or read from its first bytes (JPEG, PNG)."""
    if declared is not None:
        if declared not in ("jpeg", "png", "raw"):
            raise UploadRefused(422, f"format must be jpeg, png or raw, not {declared[:20]!r}")
        return declared
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    raise UploadRefused(415, "the body is not a JPEG or PNG image (for raw BGR bytes give format=raw, width, height)")


def upload_frame(producer: FrameProducer, settings: Settings, data: bytes, options: UploadOptions) -> dict[str, Any]:
    """Check an uploaded image as ingest would, decode it, and append it to the input stream; what was appended."""
    if not data:
        raise UploadRefused(400, "the body is empty: send the image")
    if len(data) > settings.frames.max_bytes:
        raise UploadRefused(413, f"image is {len(data)} bytes, more than the limit of {settings.frames.max_bytes}")
    fmt = image_format(data, options.format)
    try:
        metadata = json.loads(options.metadata) if options.metadata is not None else None
        timestamp = parse_timestamp(options.timestamp) if options.timestamp is not None else None
    except ValueError as exc:
        raise UploadRefused(422, f"metadata must be a JSON object and timestamp ISO-8601 or Unix seconds: {exc}") \
            from None
    if metadata is not None and not isinstance(metadata, dict):
        raise UploadRefused(422, "metadata must be a JSON object")
    capabilities = [c for c in (options.capabilities or "").split(",") if c] or None
    entry: dict[str, Any] = dict(fmt=fmt, frame_id=options.frame_id or new_frame_id(options.camera),
                                 timestamp=timestamp, priority=options.priority, capabilities=capabilities,
                                 metadata=metadata, width=options.width, height=options.height)
    fields = producer.entry(options.camera, data, **entry)
    try:
        frame, _ = parse_entry({k.encode(): v if isinstance(v, bytes) else str(v).encode()
                                for k, v in fields.items()}, settings.frames)
        height, width = decode_image(fmt, data, options.width, options.height).shape[:2]
    except FrameRejected as exc:
        raise UploadRefused(422, exc.reason) from None
    producer.add(options.camera, data, **(entry | {"timestamp": frame.timestamp}))
    return {"frame_id": frame.frame_id, "camera_id": frame.camera_id, "stream": producer.stream, "format": fmt,
            "width": int(width), "height": int(height), "timestamp": frame.timestamp,
            "capabilities": list(frame.capabilities) if frame.capabilities else None}

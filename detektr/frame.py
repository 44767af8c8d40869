"""The frame: how it arrives on the input stream, how it travels to workers, what processors see.

- `FrameEntry`: one validated input-stream entry (the external contract).
- `FrameRef`: the JSON payload of a Celery task; it names the frame bytes by key, never carries them.
- `Frame`: what a processor function receives, with the decoded BGR image.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import FrameLimits
from .errors import FrameRejected
from .imageinfo import ImageHeaderError, encoded_size

FrameFormat = Literal["jpeg", "png", "raw"]

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/\-]*$"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_CAPABILITY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_BINARY_FIELDS = {"image"}
_TEXT_PREVIEW_BYTES = 256

MAX_GATE_RESULT_BYTES = 16_384
"""A gating processor's result travels on to the processors behind its gate only up to this size, as JSON."""
MAX_GATE_RESULT_DEPTH = 8
"""... and nested no deeper than this."""


def parse_timestamp(value: object) -> float:
    """Return Unix seconds from Unix seconds (number or text) or ISO-8601 text (naive means UTC)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError("timestamp must be ISO-8601 or Unix seconds") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            seconds = parsed.timestamp()
    else:
        raise ValueError("timestamp must be ISO-8601 or Unix seconds")
    if not 0 <= seconds < 32_503_680_000:  # year 3000
        raise ValueError("timestamp out of range")
    return seconds


class FrameEntry(BaseModel):
    """One input-stream entry, validated. Unknown fields are ignored (kept in dead letters)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    frame_id: str = Field(min_length=1, max_length=200, pattern=_ID_PATTERN)
    camera_id: str = Field(min_length=1, max_length=128, pattern=_ID_PATTERN)
    timestamp: float
    format: FrameFormat = "jpeg"
    width: int | None = Field(None, ge=1, le=65_535)
    height: int | None = Field(None, ge=1, le=65_535)
    image: bytes | None = None
    image_key: str | None = Field(None, min_length=1, max_length=512)
    image_data: str | None = None
    priority: int = Field(0, ge=0, le=9)
    capabilities: tuple[str, ...] | None = None
    metadata: dict[str, Any] | None = None
    traceparent: str | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: object) -> float:
        return parse_timestamp(value)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capabilities(cls, value: object) -> object:
        if isinstance(value, str):
            names = tuple(part.strip() for part in value.split(",") if part.strip())
            bad = [name for name in names if not _CAPABILITY.match(name)]
            if bad:
                raise ValueError(f"invalid capability names: {bad}")
            return names or None
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"metadata is not valid JSON: {exc.msg}") from None
            except RecursionError:
                raise ValueError("metadata is nested too deeply to parse") from None
            if not isinstance(value, dict):
                raise ValueError("metadata must be a JSON object")
        return value

    @field_validator("traceparent")
    @classmethod
    def _traceparent(cls, value: str | None) -> str | None:
        if value is not None and not _TRACEPARENT.match(value):
            raise ValueError("traceparent is not a W3C trace context header")
        return value

    @model_validator(mode="after")
    def _one_image_source(self) -> FrameEntry:
        given = [name for name in ("image", "image_key", "image_data") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"exactly one of image, image_key, image_data is required (got {', '.join(given) or 'none'})"
            )
        if self.format == "raw" and (self.width is None or self.height is None):
            raise ValueError("format raw needs width and height")
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(loc) for loc in item["loc"]) or "entry"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def decode_fields(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """Turn a raw stream entry into str keys; text values decoded, binary ones kept as bytes."""
    decoded: dict[str, Any] = {}
    for raw_key, raw_value in fields.items():
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)
        if key in _BINARY_FIELDS or not isinstance(raw_value, bytes):
            decoded[key] = raw_value
            continue
        try:
            decoded[key] = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameRejected(f"{key}: not UTF-8 text") from None
    return decoded


def parse_entry(fields: dict[bytes, bytes], limits: FrameLimits) -> tuple[FrameEntry, bytes | None]:
    """Validate one input-stream entry; return it with its inline image bytes (None for `image_key`).

    Raises FrameRejected with a readable reason for anything that breaks the contract or the limits.
    """
    decoded = decode_fields(fields)
    metadata = decoded.get("metadata")
    if isinstance(metadata, str) and len(metadata) > limits.max_metadata_bytes:  # before parsing it
        raise FrameRejected(f"metadata larger than {limits.max_metadata_bytes} bytes")
    try:
        entry = FrameEntry.model_validate(decoded)
    except ValidationError as exc:
        raise FrameRejected(_describe(exc)) from None
    if entry.metadata is not None:
        depth = nesting_depth(entry.metadata)
        if depth > limits.max_metadata_depth:
            raise FrameRejected(f"metadata is nested {depth} deep, more than the limit of {limits.max_metadata_depth}")
        if len(json.dumps(entry.metadata)) > limits.max_metadata_bytes:
            raise FrameRejected(f"metadata larger than {limits.max_metadata_bytes} bytes")
    data: bytes | None
    if entry.image is not None:
        data = entry.image
    elif entry.image_data is not None:
        if len(entry.image_data) > limits.max_bytes * 4 // 3 + 4:
            raise FrameRejected(f"image_data larger than {limits.max_bytes} bytes")
        try:
            data = base64.b64decode(entry.image_data, validate=True)
        except (binascii.Error, ValueError):
            raise FrameRejected("image_data is not valid base64") from None
    else:
        return entry, None
    check_image_bytes(entry.format, data, entry.width, entry.height, limits)
    return entry, data


def nesting_depth(value: Any) -> int:
    """How deeply JSON-like data nests (a flat object is 1), counted without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            todo += [(child, depth + 1) for child in item.values()]
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            todo += [(child, depth + 1) for child in item]
    return deepest


def check_image_bytes(
    fmt: str, data: bytes, width: int | None, height: int | None, limits: FrameLimits
) -> tuple[int, int]:
    """Check size, header and dimensions of a frame's bytes without decoding; return (width, height)."""
    if not data:
        raise FrameRejected("image is empty")
    if len(data) > limits.max_bytes:
        raise FrameRejected(f"image is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    if fmt == "raw":
        width, height = width or 0, height or 0
        if len(data) != width * height * 3:
            raise FrameRejected(
                f"raw image is {len(data)} bytes but {width}x{height} BGR needs {width * height * 3}"
            )
    else:
        try:
            width, height = encoded_size(fmt, data)
        except ImageHeaderError as exc:
            raise FrameRejected(str(exc)) from None
    if width > limits.max_width or height > limits.max_height:
        raise FrameRejected(
            f"image is {width}x{height}, larger than the limit of {limits.max_width}x{limits.max_height}"
        )
    return width, height


def elide_binary(fields: dict[bytes, bytes] | dict[str, Any]) -> dict[str, str]:
    """Copy an entry for the dead-letter stream: text kept, large or binary values elided."""
    copy: dict[str, str] = {}
    for raw_key, value in fields.items():
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)
        if isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
                binary = key in _BINARY_FIELDS
            except UnicodeDecodeError:
                text, binary = "", True
        else:
            text, binary = str(value), False
        if binary or len(text) > _TEXT_PREVIEW_BYTES:
            size = len(value) if isinstance(value, bytes) else len(text)
            copy[key] = f"<{size} bytes elided>"
        else:
            copy[key] = text
    return copy


class GatedTask(BaseModel):
    """A processor to run after a gating processor's gate opens (e.g. face after motion)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    processor: str
    queue: str


def carried_gate_result(result_json: str) -> dict[str, Any] | None:
    """What of a gating processor's result (as published, JSON) travels with the frame to the processors
    behind its gate: the result, when it is a JSON object within MAX_GATE_RESULT_BYTES and
    MAX_GATE_RESULT_DEPTH; else None (they run as if no gate had said anything)."""
    if len(result_json) > MAX_GATE_RESULT_BYTES or not result_json.startswith("{"):
        return None
    result = json.loads(result_json)
    return result if nesting_depth(result) <= MAX_GATE_RESULT_DEPTH else None


class EntryRef(BaseModel):
    """Where the bytes of a frame that came inline lie: the `image` field of its input-stream entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: str = Field(min_length=1, max_length=512)
    id: str = Field(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")


class FrameRef(BaseModel):
    """The Celery task payload: a frame's description and where its bytes lie (JSON only).

    The bytes are under `image_key` (a string key) or, for a frame that came inline, in its
    input-stream entry (`image_entry`): ingest does not copy them. `owners` says who deletes them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_id: str
    camera_id: str
    timestamp: float
    format: FrameFormat
    width: int | None = None
    height: int | None = None
    image_key: str | None = Field(None, min_length=1)
    image_entry: EntryRef | None = None
    owners: int = Field(0, ge=0)
    """The (frame, processor) pairs sharing bytes that detektr deletes when the last of them ends: 0 when
    they are not detektr's to delete (a producer's key, entries kept), 1 when the pair's end deletes them,
    more when a reference count (`keys.frame_refs`) tells the last end (`detektr.outcomes`)."""
    priority: int = 0
    metadata: dict[str, Any] | None = None
    traceparent: str | None = None
    ingested_at: float
    attempt: int = Field(0, ge=0)
    then: tuple[GatedTask, ...] = ()
    gate_result: dict[str, Any] | None = None
    """The result of the processor whose gate let this frame through (`carried_gate_result`)."""

    @field_validator("gate_result")
    @classmethod
    def _bounded_gate_result(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and (nesting_depth(value) > MAX_GATE_RESULT_DEPTH
                                  or len(json.dumps(value)) > MAX_GATE_RESULT_BYTES):
            raise ValueError(f"gate_result larger than {MAX_GATE_RESULT_BYTES} bytes or nested deeper than "
                             f"{MAX_GATE_RESULT_DEPTH}")
        return value

    @model_validator(mode="after")
    def _one_place_for_bytes(self) -> FrameRef:
        if (self.image_key is None) == (self.image_entry is None):
            raise ValueError("exactly one of image_key, image_entry is required")
        return self

    @property
    def bytes_holder(self) -> tuple[str, str]:
        """The key holding the bytes, and the entry id in it ("" when the key is a string of the bytes)."""
        if self.image_entry is not None:
            return self.image_entry.stream, self.image_entry.id
        return self.image_key or "", ""

    def describe_bytes(self) -> str:
        """Where the bytes are, for messages."""
        if self.image_entry is not None:
            return f"input entry {self.image_entry.id} of {self.image_entry.stream!r}"
        return f"frame bytes {self.image_key!r}"


@dataclass(frozen=True)
class Frame:
    """What a processor receives: the decoded image (numpy, BGR, uint8) and the frame's identity.

    `gate_result`: for a processor behind a gate (e.g. `face` behind `motion`), the gating
    processor's result for this frame (motion's `{"motion": true, "boxes": [...], ...}`), when
    it is a JSON object of at most 16 KiB; None otherwise (no gate, gating off, or too large).
    """

    image: np.ndarray = field(repr=False)
    frame_id: str
    camera_id: str
    timestamp: float
    priority: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None
    gate_result: dict[str, Any] | None = None

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])

    @property
    def captured_at(self) -> datetime:
        """Capture time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp, tz=timezone.utc)


def decode_image(fmt: str, data: bytes, width: int | None, height: int | None) -> np.ndarray:
    """Decode frame bytes into a BGR uint8 array; raise FrameRejected if they do not decode."""
    import cv2  # imported here so that ingest and the CLI start without OpenCV's load time

    if fmt == "raw":
        if width is None or height is None or len(data) != width * height * 3:
            raise FrameRejected("raw frame bytes do not match width x height x 3")
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameRejected(f"corrupt {fmt}: the image does not decode")
    return image

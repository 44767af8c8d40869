"""Input-stream entry validation and frame decoding."""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from detektr.config import FrameLimits
from detektr.errors import FrameRejected
from detektr.frame import (
    MAX_GATE_RESULT_BYTES,
    MAX_GATE_RESULT_DEPTH,
    FrameRef,
    carried_gate_result,
    decode_image,
    elide_binary,
    parse_entry,
    parse_timestamp,
)
from detektr.imageinfo import ImageHeaderError, jpeg_size, png_size

LIMITS = FrameLimits()


def encoded(ext: str, width: int = 64, height: int = 48) -> bytes:
    image = np.full((height, width, 3), 120, dtype=np.uint8)
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def entry(**fields) -> dict[bytes, bytes]:
    base = {"frame_id": "f1", "camera_id": "cam01", "timestamp": "1700000000.5", "image": encoded(".jpg")}
    base.update(fields)
    return {k.encode(): (v if isinstance(v, bytes) else str(v).encode()) for k, v in base.items() if v is not None}


def test_a_valid_jpeg_entry_parses_with_defaults():
    frame, data = parse_entry(entry(), LIMITS)
    assert (frame.frame_id, frame.camera_id, frame.format, frame.priority) == ("f1", "cam01", "jpeg", 0)
    assert frame.timestamp == 1700000000.5 and frame.capabilities is None and data.startswith(b"\xff\xd8")


@pytest.mark.parametrize("value,expected", [
    ("1700000000", 1700000000.0),
    ("2023-11-14T22:13:20Z", 1700000000.0),
    ("2023-11-14T22:13:20", 1700000000.0),
    ("2023-11-14T23:13:20+01:00", 1700000000.0),
])
def test_timestamps_in_unix_seconds_or_iso_8601(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("fields,words", [
    ({"camera_id": None}, "camera_id"),
    ({"frame_id": "bad id with spaces"}, "frame_id"),
    ({"timestamp": "soon"}, "timestamp"),
    ({"priority": "10"}, "priority"),
    ({"format": "gif"}, "format"),
    ({"image": None}, "exactly one of image"),
    ({"image_key": "k"}, "exactly one of image"),
    ({"metadata": "[1, 2]"}, "JSON object"),
    ({"traceparent": "nope"}, "traceparent"),
    ({"capabilities": "ok,not ok!"}, "capability"),
    ({"image": b"\x89PNG\r\n\x1a\nshort", "format": "png"}, "not a PNG"),
    ({"image": b"\xff\xd8\xff\xe0garbage"}, "end-of-image"),
    ({"image": b""}, "empty"),
    ({"format": "raw", "image": b"\x00" * 12}, "width and height"),
    ({"format": "raw", "width": "2", "height": "2", "image": b"\x00" * 11}, "needs 12"),
])
def test_bad_entries_are_rejected_with_a_reason(fields, words):
    with pytest.raises(FrameRejected) as caught:
        parse_entry(entry(**fields), LIMITS)
    assert words in caught.value.reason


def test_limits_on_bytes_and_dimensions():
    with pytest.raises(FrameRejected, match="larger than the limit of 32x32"):
        parse_entry(entry(), FrameLimits(max_width=32, max_height=32))
    with pytest.raises(FrameRejected, match="more than the limit"):
        parse_entry(entry(image=b"\xff\xd8\xff" + b"\x00" * 5000), FrameLimits(max_bytes=1024))
    with pytest.raises(FrameRejected, match="metadata larger"):
        parse_entry(entry(metadata='{"a": "' + "x" * 100 + '"}'), FrameLimits(max_metadata_bytes=10))


def test_metadata_nesting_is_bounded_before_it_can_break_a_parser_or_a_task():
    deep = '{"a": ' * 1000 + "1" + "}" * 1000  # 6 KB, under the size limit, past Python's recursion limit
    with pytest.raises(FrameRejected, match="nested too deeply"):
        parse_entry(entry(metadata=deep), LIMITS)
    seventeen = '{"a": ' * 17 + "1" + "}" * 17
    with pytest.raises(FrameRejected, match="nested 17 deep, more than the limit of 16"):
        parse_entry(entry(metadata=seventeen), LIMITS)
    lists = '{"a": ' + "[" * 16 + "1" + "]" * 16 + "}"
    with pytest.raises(FrameRejected, match="nested 17 deep"):
        parse_entry(entry(metadata=lists), LIMITS)
    sixteen = '{"a": ' * 16 + "1" + "}" * 16
    assert parse_entry(entry(metadata=sixteen), LIMITS)[0].metadata is not None
    wide = "{" + ",".join(f'"k{i}": [{i}]' for i in range(500)) + "}"
    assert len(parse_entry(entry(metadata=wide), LIMITS)[0].metadata) == 500
    with pytest.raises(FrameRejected, match="metadata larger"):  # refused before it is parsed
        parse_entry(entry(metadata="[" * 20_000), LIMITS)


def test_base64_image_data_and_png_and_raw_are_accepted():
    frame, data = parse_entry(entry(image=None, image_data=base64.b64encode(encoded(".jpg")).decode()), LIMITS)
    assert data.startswith(b"\xff\xd8")
    frame, data = parse_entry(entry(image=encoded(".png"), format="png"), LIMITS)
    assert png_size(data) == (64, 48)
    frame, data = parse_entry(entry(image=b"\x01" * 12, format="raw", width="2", height="2"), LIMITS)
    assert decode_image("raw", data, 2, 2).shape == (2, 2, 3)
    with pytest.raises(FrameRejected, match="base64"):
        parse_entry(entry(image=None, image_data="***"), LIMITS)


def test_capabilities_and_metadata_are_parsed():
    frame, _ = parse_entry(entry(capabilities="face_detection, motion_detection", metadata='{"zone": "door"}'), LIMITS)
    assert frame.capabilities == ("face_detection", "motion_detection")
    assert frame.metadata == {"zone": "door"}


def test_header_sizes_match_the_encoder():
    assert jpeg_size(encoded(".jpg", 321, 123)) == (321, 123)
    assert png_size(encoded(".png", 17, 9)) == (17, 9)
    with pytest.raises(ImageHeaderError):
        jpeg_size(b"\xff\xd8\xff\xd9")


def test_decoding_gives_bgr_and_corrupt_bytes_are_rejected():
    image = decode_image("jpeg", encoded(".jpg"), None, None)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    with pytest.raises(FrameRejected, match="does not decode"):
        decode_image("jpeg", b"\xff\xd8\xff" + b"\x13" * 300 + b"\xff\xd9", None, None)


def test_dead_letter_copies_elide_binary_and_long_values():
    copy = elide_binary({b"image": b"\xff\xd8" * 100, b"camera_id": b"cam01", b"note": b"x" * 1000})
    assert copy == {"image": "<200 bytes elided>", "camera_id": "cam01", "note": "<1000 bytes elided>"}


def test_a_gating_processors_result_travels_on_when_it_is_a_small_json_object():
    small = json.dumps({"motion": True, "boxes": [[1, 2, 3, 4]] * 10})
    assert carried_gate_result(small) == json.loads(small)
    assert carried_gate_result(json.dumps({"boxes": [[1, 2, 3, 4]] * 2000})) is None  # over 16 KiB
    assert carried_gate_result("[1, 2]") is None and carried_gate_result("true") is None  # not an object
    deep: dict = {}
    for _ in range(MAX_GATE_RESULT_DEPTH + 1):
        deep = {"x": deep}
    assert carried_gate_result(json.dumps(deep)) is None


def test_a_frame_reference_refuses_an_oversized_gate_result_and_the_frame_carries_a_small_one():
    base = {"frame_id": "f1", "camera_id": "c", "timestamp": 1.0, "format": "jpeg", "image_key": "k",
            "ingested_at": 1.0}
    ref = FrameRef.model_validate({**base, "gate_result": {"boxes": [[1, 2, 3, 4]]}})
    assert FrameRef.model_validate(ref.model_dump(exclude_none=True)).gate_result == {"boxes": [[1, 2, 3, 4]]}
    with pytest.raises(ValidationError, match="gate_result"):
        FrameRef.model_validate({**base, "gate_result": {"boxes": "x" * (MAX_GATE_RESULT_BYTES + 1)}})
    assert FrameRef.model_validate(base).gate_result is None


def test_a_frame_reference_says_where_its_bytes_are_in_exactly_one_place():
    base = {"frame_id": "f1", "camera_id": "c", "timestamp": 1.0, "format": "jpeg", "ingested_at": 1.0}
    in_entry = FrameRef.model_validate({**base, "image_entry": {"stream": "frames:capture", "id": "17-3"}})
    assert in_entry.bytes_holder == ("frames:capture", "17-3")
    assert FrameRef.model_validate(in_entry.model_dump(exclude_none=True)) == in_entry  # as a task payload
    assert FrameRef.model_validate({**base, "image_key": "k"}).bytes_holder == ("k", "")
    for where in ({}, {"image_key": "k", "image_entry": {"stream": "s", "id": "1-0"}}):
        with pytest.raises(ValidationError, match="exactly one of image_key, image_entry"):
            FrameRef.model_validate({**base, **where})
    for bad in ({"stream": "s", "id": "1-0 x"}, {"stream": "", "id": "1-0"}, {"stream": "s", "id": "1-0", "x": 1}):
        with pytest.raises(ValidationError):
            FrameRef.model_validate({**base, "image_entry": bad})

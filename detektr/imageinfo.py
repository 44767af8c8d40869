"""Read an encoded image's format and size from its header, without decoding the pixels.

Ingest uses this to refuse oversized or non-image payloads before any worker decodes them
(a decompression bomb never reaches OpenCV).
"""

from __future__ import annotations

import struct

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Start-of-frame markers that carry the image size (all SOFn except DHT, JPG and DAC).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class ImageHeaderError(ValueError):
    """The bytes are not a well-formed image of the declared format."""


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) of a baseline or progressive JPEG; raise ImageHeaderError otherwise."""
    if not data.startswith(JPEG_SOI):
        raise ImageHeaderError("not a JPEG: missing start-of-image marker")
    if not data.rstrip(b"\x00").endswith(JPEG_EOI):
        raise ImageHeaderError("corrupt or truncated JPEG: missing end-of-image marker")
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise ImageHeaderError(f"corrupt JPEG: bad marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise ImageHeaderError(f"corrupt JPEG: bad segment length at byte {pos}")
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if width == 0 or height == 0:
                raise ImageHeaderError("corrupt JPEG: zero width or height")
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise ImageHeaderError("corrupt JPEG: no frame header found")


def png_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) of a PNG; raise ImageHeaderError otherwise."""
    if not data.startswith(PNG_SIGNATURE) or len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageHeaderError("not a PNG: missing signature or IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise ImageHeaderError("corrupt PNG: zero width or height")
    return width, height


def encoded_size(fmt: str, data: bytes) -> tuple[int, int]:
    """Return (width, height) for `jpeg` or `png` bytes."""
    if fmt == "jpeg":
        return jpeg_size(data)
    if fmt == "png":
        return png_size(data)
    raise ImageHeaderError(f"no header reader for format {fmt!r}")

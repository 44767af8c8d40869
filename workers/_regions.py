"""Detection on regions of a frame: where motion is, or on tiles, instead of the whole frame squeezed.

A detector with a small square input (BlazeFace 192, NanoDet 416) run on a whole 1280x720 frame
sees a 40-pixel face as 6 pixels. Run on a crop around where something moved (Frigate's trick),
or on tiles, it keeps its pixels. This module is plain code with no I/O:

- `plan_regions`: motion boxes -> square crops with context, merged where they overlap, clamped
  to the frame; None when the whole frame is the better choice (no boxes, or moving regions
  covering too much of it).
- `tiles`: overlapping square crops covering a frame.
- `detect_in_crops`: run a detector on crops, map its detections back to frame pixels, drop those
  cut by a crop's inner edge (another crop holds them whole), suppress duplicates across crops.
- `detect_in_regions`: the three together, for a detector `detect(crop) -> [Detection]` in crop pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]
"""x, y, width, height in pixels."""


@dataclass(frozen=True)
class Detection:
    """One thing found: its box (x, y, w, h), score, class label and any points (keypoints), in one picture's pixels."""

    box: tuple[float, float, float, float]
    score: float
    label: int = 0
    points: tuple[tuple[float, float], ...] = ()

    def frame_box(self, width: int, height: int) -> list[int]:
        """Its box [x, y, w, h] in whole pixels, clipped to a `width` x `height` frame (w or h 0 when outside)."""
        x, y, w, h = self.box
        x0, y0 = min(max(round(x), 0), width), min(max(round(y), 0), height)
        x1, y1 = min(max(round(x + w), 0), width), min(max(round(y + h), 0), height)
        return [x0, y0, x1 - x0, y1 - y0]

    def shifted(self, dx: float, dy: float) -> Detection:
        """The same detection moved by (dx, dy): from a crop's pixels to the frame's."""
        x, y, w, h = self.box
        return replace(self, box=(x + dx, y + dy, w, h), points=tuple((px + dx, py + dy) for px, py in self.points))


def boxes_from(result: Any, limit: int = 256) -> list[Box] | None:
    """The `boxes` of a gating processor's result (motion's), as int boxes; None when it has none usable.

    What travels from another process is checked here: anything but a list of [x, y, w, h]
    numbers with positive sizes is ignored; more than `limit` boxes count as none (whole frame).
    """
    boxes = result.get("boxes") if isinstance(result, dict) else None
    if not isinstance(boxes, list) or not boxes or len(boxes) > limit:
        return None
    usable = []
    for box in boxes:
        if (isinstance(box, (list, tuple)) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box)
                and box[2] > 0 and box[3] > 0):
            usable.append(tuple(int(round(v)) for v in box))
    return usable or None


def square_around(box: Box, context: float, min_side: int, width: int, height: int) -> Box:
    """A square crop centred on `box`, grown by `context` of its longer side, at least `min_side`, inside the frame.

    The square is moved (not shrunk) to lie inside the frame; only a square larger than the frame
    is cut to it.
    """
    x, y, w, h = box
    side = max(round(max(w, h) * (1 + context)), min_side)
    cx, cy = x + w / 2, y + h / 2
    crop_w, crop_h = min(side, width), min(side, height)
    x0 = int(min(max(round(cx - crop_w / 2), 0), width - crop_w))
    y0 = int(min(max(round(cy - crop_h / 2), 0), height - crop_h))
    return (x0, y0, crop_w, crop_h)


def _intersection(a: Box, b: Box) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0)


def plan_regions(
    boxes: Sequence[Box] | None,
    width: int,
    height: int,
    min_side: int,
    *,
    context: float = 0.5,
    merge_overlap: float = 0.3,
    max_share: float = 0.5,
    max_regions: int = 8,
) -> list[Box] | None:
    """The crops to run a detector on for these moving boxes; None where the whole frame is better.

    Each box becomes a square crop (`square_around`: `context` around it, at least `min_side`,
    usually the model's input side, so nothing is scaled up). Crops overlapping by more than
    `merge_overlap` of the smaller one are merged into one crop around the boxes of both, until
    none do. None (run on the whole frame) when there are no boxes, more than four times
    `max_regions` boxes (much moves: merging them would cost more than it saves), more than
    `max_regions` crops, or crops covering more than `max_share` of the frame.
    """
    if not boxes or len(boxes) > 4 * max_regions or width <= 0 or height <= 0:
        return None
    spans = list(boxes)  # per crop: the box around the moving boxes it holds
    regions = [square_around(box, context, min_side, width, height) for box in spans]
    merged = True
    while merged:
        merged = False
        for i, j in ((i, j) for i in range(len(regions)) for j in range(i + 1, len(regions))):
            a, b = regions[i], regions[j]
            if _intersection(a, b) > merge_overlap * min(a[2] * a[3], b[2] * b[3]):
                spans[i] = _union(spans[i], spans.pop(j))
                regions[i] = square_around(spans[i], context, min_side, width, height)
                del regions[j]
                merged = True
                break
    if len(regions) > max_regions or covered_area(regions) > max_share * width * height:
        return None
    return regions


def covered_area(boxes: Sequence[Box]) -> int:
    """The area the boxes cover together (overlaps counted once), in square pixels."""
    edges = sorted({x for bx, _, bw, _ in boxes for x in (bx, bx + bw)})
    area = 0
    for left, right in zip(edges, edges[1:]):
        spans = sorted((by, by + bh) for bx, by, bw, bh in boxes if bx <= left and bx + bw >= right)
        length, reach = 0, None
        for top, bottom in spans:
            if reach is None or top > reach:
                length, reach = length + bottom - top, bottom
            elif bottom > reach:
                length, reach = length + bottom - reach, bottom
        area += length * (right - left)
    return area


def tiles(width: int, height: int, side: int, overlap: int) -> list[Box]:
    """Square tiles of `side` covering the frame, neighbours overlapping by at least `overlap` pixels.

    A thing no larger than `overlap` lies whole inside some tile. A frame no larger than `side`
    is one tile (itself).
    """
    side = max(side, overlap + 1, 1)

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        count = -(-(length - overlap) // (side - overlap))  # ceil: enough tiles for the overlap
        step = (length - side) / (count - 1)
        return [round(i * step) for i in range(count)]

    return [(x, y, min(side, width), min(side, height)) for y in starts(height) for x in starts(width)]


def suppress(detections: Sequence[Detection], iou: float) -> list[Detection]:
    """Class-wise non-maximum suppression: of detections of one label overlapping by more than `iou`,
    the best scoring is kept. Best first."""
    ordered = sorted(detections, key=lambda d: -d.score)
    kept: list[Detection] = []
    for candidate in ordered:
        cx, cy, cw, ch = candidate.box
        clear = True
        for other in kept:
            if other.label != candidate.label:
                continue
            ox, oy, ow, oh = other.box
            w = min(cx + cw, ox + ow) - max(cx, ox)
            h = min(cy + ch, oy + oh) - max(cy, oy)
            inter = max(w, 0) * max(h, 0)
            union = cw * ch + ow * oh - inter
            if union > 0 and inter / union > iou:
                clear = False
                break
        if clear:
            kept.append(candidate)
    return kept


def _cut_by_inner_edge(detection: Detection, crop: Box, width: int, height: int, margin: float) -> bool:
    """Whether the detection touches an edge of its crop that lies inside the frame (so it may be cut off)."""
    x, y, w, h = detection.box
    cx, cy, cw, ch = crop
    return ((cx > 0 and x <= cx + margin) or (cy > 0 and y <= cy + margin)
            or (cx + cw < width and x + w >= cx + cw - margin) or (cy + ch < height and y + h >= cy + ch - margin))


def detect_in_crops(
    image: np.ndarray,
    crops: Sequence[Box],
    detect: Callable[[np.ndarray], list[Detection]],
    *,
    nms_iou: float = 0.5,
    drop_cut: bool = True,
    edge_margin: float = 2.0,
) -> list[Detection]:
    """Run `detect` on each crop of the image; detections in frame pixels, duplicates across crops suppressed.

    With `drop_cut` (for tiles), a detection touching (within `edge_margin` pixels) an edge of its
    crop that lies inside the frame is dropped: it may be cut off, and a neighbouring tile, or the
    whole frame, holds it whole.
    """
    height, width = image.shape[:2]
    found: list[Detection] = []
    for crop in crops:
        x, y, w, h = crop
        for detection in detect(image[y : y + h, x : x + w]):
            moved = detection.shifted(x, y)
            if not drop_cut or not _cut_by_inner_edge(moved, crop, width, height, edge_margin):
                found.append(moved)
    return suppress(found, nms_iou) if len(crops) > 1 else sorted(found, key=lambda d: -d.score)


def detect_in_regions(
    image: np.ndarray,
    boxes: Sequence[Box] | None,
    detect: Callable[[np.ndarray], list[Detection]],
    input_size: int,
    *,
    whole_frame: Callable[[np.ndarray], list[Detection]] | None = None,
    context: float = 0.5,
    max_share: float = 0.5,
    max_regions: int = 8,
    nms_iou: float = 0.5,
) -> tuple[list[Detection], list[Box] | None]:
    """Detect where the moving `boxes` are (crops at least `input_size` pixels a side, see `plan_regions`),
    with detections mapped back to frame pixels; the crops used, or None where the whole frame was used.

    Without boxes, or with motion over too much of the frame, `whole_frame(image)` runs instead
    (default: `detect` on the whole image; pass one that tiles a large frame).
    """
    height, width = image.shape[:2]
    crops = plan_regions(boxes, width, height, input_size, context=context, max_share=max_share,
                         max_regions=max_regions)
    if crops is None:
        return (whole_frame or detect)(image), None
    detections = detect_in_crops(image, crops, detect, nms_iou=nms_iou, drop_cut=False)
    return detections, crops

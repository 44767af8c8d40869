"""From frames to detector inputs, and from detector outputs to detections: numpy and OpenCV, no I/O.

Not a processor module. Used by `objects` (the shipped NanoDet-m) and `onnx` (your own model).
Every decoder works on whole arrays (no loop over anchors) and returns boxes as corners
(x1, y1, x2, y2) in pixels of the model's input, with one score per class:

- `yolov8`: one output `[4 + C, A]` (YOLOv8, YOLO11): centre x, centre y, width, height, then
  the C class scores.
- `yolov5`: one output `[A, 5 + C]` (YOLOv5, YOLOv7 style): centre x, centre y, width, height,
  objectness, then C class scores; a class's score is objectness times its score.
- `nanodet`: Generalized Focal Loss heads. Either a class-score output `[n, C]` (after a sigmoid)
  and a box-distribution output `[n, 4 * B]` per stride (NanoDet and the shipped NanoDet-m), cell
  centres at ((col + 0.5) s, (row + 0.5) s); or one output `[N, C + 4 * B]` holding every stride
  (NanoDet-Plus), centres at (col s, row s). Each side's distance from the centre is the
  expectation of a softmax over its B bins, times the stride.

`select` then keeps the (box, class) pairs that reach their class's threshold and runs class-wise
non-maximum suppression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
"""NanoDet's per-channel mean, in BGR order."""
NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)
"""NanoDet's per-channel standard deviation, in BGR order."""
LETTERBOX_GREY = 114
"""The grey that YOLO exports are trained with around a letterboxed image."""
STRIDES = (8, 16, 32, 64, 128)
"""The strides a detection head's levels may have, finest first."""
MAX_CANDIDATES = 3000
"""At most this many (box, class) pairs, the best, go into non-maximum suppression."""


@dataclass(frozen=True)
class Placement:
    """Where a frame sits in the model's input: input pixel = frame pixel * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int
    height: int
    """The frame's size, to clip boxes to."""

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Corner boxes [K, 4] in input pixels as corner boxes in frame pixels, clipped to the frame."""
        out = np.empty_like(boxes, dtype=np.float64)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.height, out=out[:, 1::2])
        return out


def stretch(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Placement]:
    """The image resized to `size` (width, height) without keeping its aspect ratio."""
    height, width = image.shape[:2]
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return resized, Placement(size[0] / width, size[1] / height, 0.0, 0.0, width, height)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Placement]:
    """The image scaled to fit `size` (width, height), aspect ratio kept, centred on grey (YOLO's way)."""
    height, width = image.shape[:2]
    ratio = min(size[0] / width, size[1] / height)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    pad_x, pad_y = (size[0] - new_w) // 2, (size[1] - new_h) // 2
    canvas = np.full((size[1], size[0], 3), LETTERBOX_GREY, np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_LINEAR
    )
    return canvas, Placement(new_w / width, new_h / height, pad_x, pad_y, width, height)


def nanodet_input(images: Sequence[np.ndarray]) -> np.ndarray:
    """Resized BGR images [H, W, 3] as NanoDet's input: [N, 3, H, W] float32, (pixel - mean) / std."""
    batch = (np.stack(images).astype(np.float32) - NANODET_MEAN) / NANODET_STD
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def yolo_input(images: Sequence[np.ndarray]) -> np.ndarray:
    """Letterboxed BGR images [H, W, 3] as a YOLO export's input: [N, 3, H, W] float32 RGB in 0..1."""
    batch = np.stack(images)[..., ::-1].astype(np.float32) * np.float32(1 / 255)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _corners(centre_boxes: np.ndarray) -> np.ndarray:
    """[K, 4] centre x, centre y, width, height as corners x1, y1, x2, y2."""
    half = centre_boxes[:, 2:4] / 2
    return np.concatenate([centre_boxes[:, :2] - half, centre_boxes[:, :2] + half], axis=1)


def decode_yolov8(output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's `[4 + C, A]` output: corner boxes [A, 4] and class scores [A, C]."""
    rows = output.T
    return _corners(rows[:, :4]), rows[:, 4:]


def decode_yolov5(output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's `[A, 5 + C]` output: corner boxes [A, 4] and class scores [A, C] (objectness times class)."""
    return _corners(output[:, :4]), output[:, 5:] * output[:, 4:5]


def grid(count: int, size: tuple[int, int], strides: Sequence[int] = STRIDES) -> tuple[int, int, int]:
    """The stride and the grid (columns, rows) of a level with `count` cells, for an input of `size`."""
    for stride in strides:
        cols, rows = -(-size[0] // stride), -(-size[1] // stride)
        if cols * rows == count:
            return stride, cols, rows
    raise ValueError(f"no stride of {tuple(strides)} gives {count} cells for a {size[0]}x{size[1]} input")


def _distances(distributions: np.ndarray) -> np.ndarray:
    """[n, 4 * B] bin logits as [n, 4] expected bin indexes (softmax over each side's B bins)."""
    n = distributions.shape[0]
    logits = distributions.reshape(n, 4, -1).astype(np.float32)
    logits = logits - logits.max(axis=2, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=2, keepdims=True)
    return weights @ np.arange(logits.shape[2], dtype=np.float32)


def _gfl_boxes(distributions: np.ndarray, stride: int, cols: int, rows: int, offset: float) -> np.ndarray:
    """One level's distributions [cols * rows, 4 * B] as corner boxes around its cell centres."""
    cells = np.arange(cols * rows)
    centre_x = (cells % cols + offset) * stride
    centre_y = (cells // cols + offset) * stride
    d = _distances(distributions) * stride
    return np.stack([centre_x - d[:, 0], centre_y - d[:, 1], centre_x + d[:, 2], centre_y + d[:, 3]], axis=1)


def split_nanodet_level(a: np.ndarray, b: np.ndarray, classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Of one level's two outputs `[n, C]` and `[n, 4 * B]` (either order): (scores, distributions).

    Told apart by the number of classes when known, else by NanoDet's bins (8 or 11 per side),
    else by which last dimension is not a multiple of 4.
    """
    da, db = a.shape[-1], b.shape[-1]
    for test in (
        lambda d: classes is not None and d == classes,
        lambda d: d not in (32, 44),
        lambda d: d % 4 != 0,
    ):
        if test(da) != test(db):
            return (a, b) if test(da) else (b, a)
    raise ValueError(
        f"cannot tell a level's class scores from its box distributions (last dimensions {da} and {db}); "
        "give the class names (a labels file) so that the number of classes is known"
    )


def decode_nanodet(
    outputs: Sequence[np.ndarray], size: tuple[int, int], classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One image's NanoDet outputs (each without the batch dimension): corner boxes [A, 4], scores [A, C].

    `size` is the model's input (width, height); `classes` the number of classes when known.
    """
    if len(outputs) == 1:
        return _decode_nanodet_plus(outputs[0], size, classes)
    by_cells: dict[int, list[np.ndarray]] = {}
    for output in outputs:
        by_cells.setdefault(output.shape[0], []).append(output)
    if any(len(pair) != 2 for pair in by_cells.values()):
        shapes = [list(output.shape) for output in outputs]
        raise ValueError(f"NanoDet outputs should come in pairs of equal cell counts per stride, got {shapes}")
    boxes, scores = [], []
    for count, (a, b) in sorted(by_cells.items(), reverse=True):
        level_scores, distributions = split_nanodet_level(a, b, classes)
        stride, cols, rows = grid(count, size)
        boxes.append(_gfl_boxes(distributions, stride, cols, rows, 0.5))
        scores.append(level_scores)
    return np.concatenate(boxes), np.concatenate(scores)


def _decode_nanodet_plus(output: np.ndarray, size: tuple[int, int], classes: int | None) -> tuple[np.ndarray, ...]:
    """NanoDet-Plus: one `[N, C + 4 * B]` output over strides 8, 16, 32, 64 (B = 8 unless `classes` says)."""
    total = output.shape[0]
    levels = None
    for count in (4, 3, 5):
        cells = [-(-size[0] // s) * -(-size[1] // s) for s in STRIDES[:count]]
        if sum(cells) == total:
            levels = list(zip(STRIDES[:count], cells))
            break
    if levels is None:
        raise ValueError(f"{total} rows match no NanoDet-Plus grid for a {size[0]}x{size[1]} input")
    classes = classes if classes is not None else output.shape[1] - 32
    if classes <= 0 or (output.shape[1] - classes) % 4:
        raise ValueError(f"a NanoDet-Plus output of {output.shape[1]} columns does not fit {classes} classes")
    boxes, start = [], 0
    for stride, count in levels:
        cols = -(-size[0] // stride)
        boxes.append(_gfl_boxes(output[start : start + count, classes:], stride, cols, count // cols, 0.0))
        start += count
    return np.concatenate(boxes), output[:, :classes]


def select(
    boxes: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, nms_iou: float, max_detections: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detections kept: corner boxes [K, 4], scores [K] and classes [K], best score first.

    A (box, class) pair is a candidate when its score reaches `thresholds[class]` (infinite for a
    class that is not wanted); candidates go through class-wise non-maximum suppression at `nms_iou`.
    """
    anchors, classes = np.nonzero(scores >= thresholds[np.newaxis, :])
    kept_scores = scores[anchors, classes]
    if len(kept_scores) > MAX_CANDIDATES:
        best = np.argpartition(-kept_scores, MAX_CANDIDATES)[:MAX_CANDIDATES]
        anchors, classes, kept_scores = anchors[best], classes[best], kept_scores[best]
    kept_boxes = boxes[anchors].astype(np.float64)
    if len(kept_scores) == 0:
        return kept_boxes.reshape(0, 4), kept_scores.astype(np.float32), classes
    xywh = np.concatenate([kept_boxes[:, :2], kept_boxes[:, 2:] - kept_boxes[:, :2]], axis=1)
    keep = np.asarray(
        cv2.dnn.NMSBoxesBatched(xywh, kept_scores.astype(np.float32), classes.astype(np.int32), 0.0, nms_iou),
        dtype=np.int64,
    ).reshape(-1)
    keep = keep[np.argsort(-kept_scores[keep], kind="stable")][:max_detections]
    return kept_boxes[keep], kept_scores[keep], classes[keep]


def as_detections(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, placement: Placement, labels: Sequence[str],
    with_class: bool = False,
) -> list[dict[str, Any]]:
    """Selected detections as JSON-ready dicts: label (else the class index), score, box [x, y, w, h] in frame pixels.

    Boxes are rounded to whole pixels and clipped to the frame; those left empty are dropped.
    `with_class` adds the class index as `class`.
    """
    corners = np.rint(placement.to_frame(boxes)).astype(np.int64) if len(boxes) else np.zeros((0, 4), np.int64)
    found = []
    for (x1, y1, x2, y2), score, cls in zip(corners.tolist(), scores.tolist(), classes.tolist()):
        if x2 <= x1 or y2 <= y1:
            continue
        label = labels[cls] if cls < len(labels) and labels[cls] else str(cls)
        detection: dict[str, Any] = {"label": label, "score": round(float(score), 4), "box": [x1, y1, x2 - x1, y2 - y1]}
        if with_class:
            detection["class"] = cls
        found.append(detection)
    return found

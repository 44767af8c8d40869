"""BlazeFace (MediaPipe's face detector) on onnxruntime: letterbox, run, decode anchors, weighted NMS.

Not a processor module (the leading underscore keeps discovery away from it); `face` uses it.
The two models ship in `detektr/models/` (converted from the mediapipe 0.10.21 wheel, see the
NOTICE there): full range (192x192 input, faces at CCTV distances) and short range (128x128,
faces near the camera). Input NHWC RGB scaled to [-1, 1]; the frame is letterboxed to a centred
square. Outputs: `regressors` [1, A, 16] (box centre offset, size, six keypoints, in input
pixels relative to the anchor) and `classificators` [1, A, 1] (a logit).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._onnx import load_session, shipped_model
from ._regions import Detection

KEYPOINTS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")
"""BlazeFace's six keypoints, in the model's order (the subject's right eye is on the image's left)."""


@dataclass(frozen=True)
class Variant:
    """One BlazeFace model: its file, input side, anchor layers and default score threshold."""

    file: str
    side: int
    strides: tuple[int, ...]
    """The stride of each anchor layer; consecutive layers of one stride share a grid."""
    per_layer: int
    """Anchors each layer puts in each cell of its grid."""
    score_min: float


VARIANTS = {
    "full": Variant("blazeface-full-range.onnx", 192, (4,), 1, 0.6),
    "short": Variant("blazeface-short-range.onnx", 128, (8, 16, 16, 16), 2, 0.5),
}
NMS_IOU = 0.3
"""Boxes overlapping the best remaining one by more than this IoU are averaged into it (weighted NMS)."""


def anchors(side: int, strides: tuple[int, ...], per_layer: int) -> np.ndarray:
    """SSD anchor centres [A, 2] in [0, 1], in MediaPipe's order (offset 0.5, fixed size 1).

    Consecutive layers with the same stride share one grid; each cell holds `per_layer` anchors
    for each of those layers (short range: 16x16 cells x 2, then 8x8 cells x 3 layers x 2 = 896).
    """
    centres = []
    i = 0
    while i < len(strides):
        stride, repeats = strides[i], 0
        while i < len(strides) and strides[i] == stride:
            repeats, i = repeats + per_layer, i + 1
        cells = -(-side // stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, repeats, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Letterbox:
    """How a picture was fitted into the model's square input: scale, then offsets in input pixels."""

    scale: float
    left: int
    top: int


def letterbox(image: np.ndarray, side: int) -> tuple[np.ndarray, Letterbox]:
    """The BGR picture as the model's input [1, side, side, 3] (RGB, -1 to 1), centred on black, and the fit."""
    height, width = image.shape[:2]
    scale = side / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    left, top = (side - new_w) // 2, (side - new_h) // 2
    square = np.zeros((side, side, 3), dtype=np.uint8)
    square[top : top + new_h, left : left + new_w] = resized
    rgb = cv2.cvtColor(square, cv2.COLOR_BGR2RGB).astype(np.float32)
    return (rgb * (2.0 / 255.0) - 1.0)[None], Letterbox(scale, left, top)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float) -> list[tuple]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of the boxes overlapping the best one.

    `boxes` [n, 4] as x0, y0, x1, y1; `points` [n, k, 2]. Returns (box, points, score) per face, best first.
    """
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    left = np.ones(len(scores), dtype=bool)
    faces = []
    for i in range(len(scores)):
        if not left[i]:
            continue
        x0 = np.maximum(boxes[i, 0], boxes[:, 0])
        y0 = np.maximum(boxes[i, 1], boxes[:, 1])
        x1 = np.minimum(boxes[i, 2], boxes[:, 2])
        y1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
        overlap = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        group = left & (overlap > iou)
        group[i] = True
        weights = scores[group][:, None]
        faces.append((
            (boxes[group] * weights).sum(0) / weights.sum(),
            (points[group] * weights[:, :, None]).sum(0) / weights.sum(),
            float(scores[i]),
        ))
        left &= ~group
    return faces


class BlazeFace:
    """A loaded BlazeFace model: `detect(image)` gives faces in the image's pixels."""

    def __init__(self, variant: str = "full", score_min: float | None = None) -> None:
        self.variant = VARIANTS[variant]
        self.score_min = self.variant.score_min if score_min is None else score_min
        # provider and threads: DETEKTR_ONNXRUNTIME_* (the same for every ONNX processor), see _onnx
        self.session = load_session(shipped_model(self.variant.file)).session
        self.anchors = anchors(self.variant.side, self.variant.strides, self.variant.per_layer)
        outputs = {output.name: output.shape for output in self.session.get_outputs()}
        if outputs.get("regressors", [None, None])[1] != len(self.anchors):
            raise RuntimeError(f"{self.variant.file}: outputs {outputs} do not match {len(self.anchors)} anchors")

    @property
    def side(self) -> int:
        """The model's square input side, in pixels."""
        return self.variant.side

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a BGR picture of any size: box (x, y, w, h), score and the six keypoints, in its pixels."""
        side = self.variant.side
        tensor, fit = letterbox(image, side)
        regressors, logits = self.session.run(["regressors", "classificators"], {"input": tensor})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100.0, 100.0)))
        keep = np.flatnonzero(scores >= self.score_min)
        if not len(keep):
            return []
        raw, anchor = regressors[0, keep], self.anchors[keep] * side  # in input pixels
        centre = raw[:, 0:2] + anchor
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchor[:, None, :]
        height, width = image.shape[:2]
        found = []
        for box, keypoints, score in weighted_nms(boxes, points, scores[keep], NMS_IOU):
            x0, y0 = (box[0] - fit.left) / fit.scale, (box[1] - fit.top) / fit.scale
            x1, y1 = (box[2] - fit.left) / fit.scale, (box[3] - fit.top) / fit.scale
            x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
            if x1 <= x0 or y1 <= y0:
                continue
            keypoints = (keypoints - (fit.left, fit.top)) / fit.scale
            found.append(Detection((x0, y0, x1 - x0, y1 - y0), score, points=tuple(map(tuple, keypoints.tolist()))))
        return found

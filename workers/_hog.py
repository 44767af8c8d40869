"""OpenCV's HOG people detector: the opt-in fallback of `objects` (DETEKTR_OBJECTS_DETECTOR=hog).

Not a processor module. Dalal-Triggs HOG with OpenCV's default people SVM (a 64x128 window):
it finds whole, upright, mostly unoccluded people at least about 64x128 pixels in the analysed
image, misses sitting, partial, small and close-up people, and fires on upright person-like
shapes (the astronaut photo's helmet). Images wider than MAX_WIDTH are downscaled first; boxes
come back in the given image's pixels. A person's score is the SVM margin (about 0.3 to 2 for
real hits), not a probability: the thresholds of `objects` do not apply, SCORE_MIN does.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ._common import bgr, scale_box, shrink

WINDOW = (64, 128)
"""HOG's detection window (width, height): nothing smaller than this is found."""
MAX_WIDTH = 640
"""Wider images are downscaled to this width first (HOG's cost grows with the pixel count)."""
SCALE = 1.05
"""The step between detection scales."""
WIN_STRIDE = 8
"""Window stride, in pixels."""
SCORE_MIN = 0.3
"""Hits with a smaller SVM margin are dropped before suppression."""
NMS_IOU = 0.45
"""Hits overlapping a better one by more than this IoU are dropped."""


def suppress(boxes: Any, scores: Any, score_min: float, iou: float) -> list[int]:
    """Indices of the boxes kept by non-maximum suppression, best score first."""
    if len(boxes) == 0:
        return []
    kept = cv2.dnn.NMSBoxes([[int(v) for v in box] for box in boxes], [float(s) for s in scores], score_min, iou)
    return sorted((int(i) for i in kept), key=lambda i: -float(scores[i]))


class HogPeople:
    """OpenCV's HOG descriptor with its default people SVM, built once per worker process."""

    def __init__(self) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def find(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Standing people in a BGR image: label "person", SVM score, box [x, y, w, h] in its pixels, best first."""
        image = bgr(image)
        height, width = image.shape[:2]
        small, scale_x, scale_y = shrink(image, MAX_WIDTH)
        if small.shape[1] < WINDOW[0] or small.shape[0] < WINDOW[1]:
            return []
        stride = (WIN_STRIDE, WIN_STRIDE)
        boxes, scores = self.hog.detectMultiScale(small, winStride=stride, padding=(8, 8), scale=SCALE)
        scores = [float(s) for s in np.asarray(scores).ravel()]
        return [
            {"label": "person", "score": round(scores[i], 4),
             "box": scale_box(boxes[i], scale_x, scale_y, width, height)}
            for i in suppress(boxes, scores, SCORE_MIN, NMS_IOU)
        ]

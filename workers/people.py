"""`people`: standing people with OpenCV's HOG + linear SVM detector, on frames where `motion` saw movement.

The detector (Dalal-Triggs HOG with OpenCV's default people SVM, a 64x128 window) finds whole,
upright, mostly unoccluded people at least about 64x128 pixels in the analysed image; it misses
sitting, partial or very small people, and close-up portraits. Frames wider than
DETEKTR_PEOPLE_MAX_WIDTH are downscaled first (HOG's cost grows with the pixel count); boxes
are reported in the original frame's pixels. Overlapping hits are merged by non-maximum
suppression; a person's score is the SVM margin (larger is surer; about 0.3 to 2 for real hits).

Settings: the fields of PeopleSettings, read from the environment and validated once per worker
process before it serves (a bad value stops the worker with one line naming the variable):

- DETEKTR_PEOPLE_MAX_WIDTH (640): downscale wider frames to this width first; 0 never downscales.
- DETEKTR_PEOPLE_SCALE (1.05): the step between detection scales (larger: faster, coarser).
- DETEKTR_PEOPLE_WIN_STRIDE (8): window stride in pixels (8 or 16; larger: faster, coarser).
- DETEKTR_PEOPLE_SCORE_MIN (0.3): hits scoring below this are dropped before suppression.
- DETEKTR_PEOPLE_NMS_IOU (0.45): hits overlapping a better one by more than this IoU are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import Frame, ProcessorSettings, processor

from ._common import bgr, scale_box, shrink

WINDOW = (64, 128)
"""HOG's detection window (width, height): nothing smaller than this is found."""


class PeopleSettings(ProcessorSettings):
    """How people are looked for: the DETEKTR_PEOPLE_* variables."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_PEOPLE_")

    max_width: int = Field(
        640, ge=0, le=16_384, description="Downscale wider frames to this width first; 0 never downscales."
    )
    scale: float = Field(
        1.05, ge=1.01, le=2.0, description="The step between detection scales (larger: faster, coarser)."
    )
    win_stride: int = Field(
        8, ge=4, le=64, description="Window stride in pixels (8 or 16; larger: faster, coarser)."
    )
    score_min: float = Field(0.3, description="Hits scoring below this are dropped before suppression.")
    nms_iou: float = Field(
        0.45, ge=0, le=1, description="Hits overlapping a better one by more than this IoU are dropped."
    )


@dataclass(frozen=True)
class PeopleState:
    """A worker process's people detector: the HOG descriptor with its SVM, and its settings."""

    hog: Any
    settings: PeopleSettings


def setup_people(settings: PeopleSettings) -> PeopleState:
    """Build the HOG descriptor with OpenCV's default people detector, once per worker process."""
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return PeopleState(hog, settings)


def suppress(boxes: Any, scores: Any, score_min: float, iou: float) -> list[int]:
    """Indices of the boxes kept by non-maximum suppression, best score first."""
    if len(boxes) == 0:
        return []
    kept = cv2.dnn.NMSBoxes([[int(v) for v in box] for box in boxes], [float(s) for s in scores], score_min, iou)
    return sorted((int(i) for i in kept), key=lambda i: -float(scores[i]))


@processor(
    "people", capabilities=["person_detection"], gated_by="motion", settings=PeopleSettings, setup=setup_people
)
def detect_people(frame: Frame, state: PeopleState) -> dict[str, Any]:
    """Standing people: boxes [x, y, w, h] in frame pixels with the SVM score, best first."""
    settings = state.settings
    image, scale_x, scale_y = shrink(bgr(frame.image), settings.max_width)
    if image.shape[1] < WINDOW[0] or image.shape[0] < WINDOW[1]:
        return {"people": [], "count": 0}
    stride = (settings.win_stride, settings.win_stride)
    boxes, scores = state.hog.detectMultiScale(image, winStride=stride, padding=(8, 8), scale=settings.scale)
    scores = [float(s) for s in (scores.ravel() if hasattr(scores, "ravel") else scores)]
    people = [
        {"box": scale_box(boxes[i], scale_x, scale_y, frame.width, frame.height), "score": round(scores[i], 4)}
        for i in suppress(boxes, scores, settings.score_min, settings.nms_iou)
    ]
    return {"people": people, "count": len(people)}

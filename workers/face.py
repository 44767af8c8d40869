"""`face`: frontal faces with OpenCV's Haar cascade, run only on frames where `motion` saw movement.

The cascade (`haarcascade_frontalface_default.xml`, shipped with OpenCV) is loaded once per
worker process. Frames wider than DETEKTR_FACE_MAX_WIDTH are downscaled first; boxes are always
reported in the original frame's pixels. A face's score is the cascade's level weight (the
confidence of its last stage; larger is surer, found faces usually score from 1 to 10).

Settings: the fields of FaceSettings, read from the environment and validated once per worker
process before it serves (a bad value stops the worker with one line naming the variable):

- DETEKTR_FACE_MAX_WIDTH (960): downscale wider frames to this width first; 0 never downscales.
- DETEKTR_FACE_SCALE_FACTOR (1.1): the step between detection scales (smaller: slower, finer).
- DETEKTR_FACE_MIN_NEIGHBORS (5): overlapping hits needed to keep a face (higher: fewer false ones).
- DETEKTR_FACE_MIN_SIZE (30): smallest face side looked for, in pixels of the analysed image.
- DETEKTR_FACE_SCORE_MIN (0): faces scoring below this are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import Frame, ProcessorSettings, processor

from ._common import grey, scale_box, shrink

CASCADE = "haarcascade_frontalface_default.xml"


class FaceSettings(ProcessorSettings):
    """How faces are looked for: the DETEKTR_FACE_* variables."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_FACE_")

    max_width: int = Field(
        960, ge=0, le=16_384, description="Downscale wider frames to this width first; 0 never downscales."
    )
    scale_factor: float = Field(
        1.1, ge=1.01, le=2.0, description="The step between detection scales (smaller: slower, finer)."
    )
    min_neighbors: int = Field(
        5, ge=0, le=100, description="Overlapping hits needed to keep a face (higher: fewer false ones)."
    )
    min_size: int = Field(
        30, ge=8, le=4096, description="Smallest face side looked for, in pixels of the analysed image."
    )
    score_min: float = Field(0.0, description="Faces scoring below this are dropped.")


@dataclass(frozen=True)
class FaceState:
    """A worker process's face detector: the loaded cascade and its settings."""

    cascade: Any
    settings: FaceSettings


def setup_face(settings: FaceSettings) -> FaceState:
    """Load the cascade once per worker process; fail clearly if OpenCV's data file is missing."""
    path = cv2.data.haarcascades + CASCADE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load the Haar cascade {path}")
    return FaceState(cascade, settings)


@processor("face", capabilities=["face_detection"], gated_by="motion", settings=FaceSettings, setup=setup_face)
def detect_faces(frame: Frame, state: FaceState) -> dict[str, Any]:
    """Frontal faces: boxes [x, y, w, h] in frame pixels with the cascade's score, best first."""
    settings = state.settings
    image, scale_x, scale_y = shrink(grey(frame.image), settings.max_width)
    image = cv2.equalizeHist(image)
    found, _levels, weights = state.cascade.detectMultiScale3(
        image,
        scaleFactor=settings.scale_factor,
        minNeighbors=settings.min_neighbors,
        minSize=(settings.min_size, settings.min_size),
        outputRejectLevels=True,
    )
    faces = [
        {"box": scale_box(box, scale_x, scale_y, frame.width, frame.height), "score": round(float(weight), 4)}
        for box, weight in zip(found, weights)
        if float(weight) >= settings.score_min
    ]
    faces.sort(key=lambda face: face["score"], reverse=True)
    return {"faces": faces, "count": len(faces)}

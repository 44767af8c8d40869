"""`face`: frontal faces with OpenCV's Haar cascade, run only on frames where `motion` saw movement.

The cascade (`haarcascade_frontalface_default.xml`, shipped with OpenCV) is loaded once per
worker process. Frames wider than DETEKTR_FACE_MAX_WIDTH are downscaled first; boxes are always
reported in the original frame's pixels. A face's score is the cascade's level weight (the
confidence of its last stage; larger is surer, found faces usually score from 1 to 10).

Settings (environment, read once per worker process in `setup`):

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

from detektr import Frame, processor

from ._common import env_float, env_int, grey, scale_box, shrink

CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class FaceSettings:
    """How faces are looked for; see the module docstring for the environment variables."""

    max_width: int = 960
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 30
    score_min: float = 0.0

    @classmethod
    def from_env(cls) -> FaceSettings:
        """Read the DETEKTR_FACE_* variables, each falling back to its default."""
        return cls(
            max_width=env_int("DETEKTR_FACE_MAX_WIDTH", cls.max_width, 0, 16_384),
            scale_factor=env_float("DETEKTR_FACE_SCALE_FACTOR", cls.scale_factor, 1.01, 2.0),
            min_neighbors=env_int("DETEKTR_FACE_MIN_NEIGHBORS", cls.min_neighbors, 0, 100),
            min_size=env_int("DETEKTR_FACE_MIN_SIZE", cls.min_size, 8, 4096),
            score_min=env_float("DETEKTR_FACE_SCORE_MIN", cls.score_min),
        )


@dataclass(frozen=True)
class FaceState:
    """A worker process's face detector: the loaded cascade and its settings."""

    cascade: Any
    settings: FaceSettings


def setup_face() -> FaceState:
    """Load the cascade once per worker process; fail clearly if OpenCV's data file is missing."""
    path = cv2.data.haarcascades + CASCADE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load the Haar cascade {path}")
    return FaceState(cascade, FaceSettings.from_env())


@processor("face", capabilities=["face_detection"], gated_by="motion", setup=setup_face)
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

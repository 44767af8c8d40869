"""`face`: faces with BlazeFace (MediaPipe's face detector, on onnxruntime), run where `motion` saw movement.

BlazeFace full range (default; faces at CCTV distances) or short range (faces near the camera)
ships inside the package (`detektr/models/`, see the NOTICE there); it is loaded once per
worker process. Each face has a box, a score (0 to 1) and six keypoints, in the frame's pixels.

Where to look: behind `motion`'s gate, a frame comes with motion's moving boxes
(`frame.gate_result`); the detector then runs on square crops around them, at least the
model's input size, so a small, distant face keeps its pixels (`_regions`). Without boxes, or
with motion over more than DETEKTR_FACE_REGION_MAX_SHARE of the frame, it runs on the whole
frame, and, with the full-range model on a frame so large that a face of DETEKTR_FACE_MIN_FACE_PX
would shrink below what the model resolves, on overlapping tiles as well.

Settings: the fields of FaceSettings, read from the environment and validated once per worker
process before it serves (a bad value stops the worker with one line naming the variable):

- DETEKTR_FACE_MODEL (full): `full` range or `short` range.
- DETEKTR_FACE_SCORE_MIN (the model's own: 0.6 full, 0.5 short): faces scoring below this are dropped.
- DETEKTR_FACE_MIN_FACE_PX (40): smallest face looked for on a whole frame (tiles); 0: never tile.
- DETEKTR_FACE_REGIONS (true): detect around the gate's moving boxes when the frame comes with them.
- DETEKTR_FACE_REGION_MAX_SHARE (0.5): the whole frame instead when the crops cover more of it than this.

onnxruntime's provider (CUDA with onnxruntime-gpu, else the CPU) and threads are DETEKTR_ONNXRUNTIME_PROVIDER and
DETEKTR_ONNXRUNTIME_THREADS, shared by every ONNX processor (`workers/_onnx.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import Frame, ProcessorSettings, processor

from ._blazeface import KEYPOINTS, BlazeFace
from ._common import bgr
from ._regions import Box, Detection, boxes_from, detect_in_crops, detect_in_regions, tiles

RESOLVED_FACE_PX = 22
"""The face side, in pixels of the model's input, from which BlazeFace finds faces reliably (measured on noisy
composed frames: about 85% at 20 px, 97% at 22 px; it finds none under 16-17 px)."""


class FaceSettings(ProcessorSettings):
    """How faces are looked for: the DETEKTR_FACE_* variables."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_FACE_")

    model: Literal["full", "short"] = Field(
        "full", description="BlazeFace `full` range (faces at CCTV distances) or `short` range (near the camera)."
    )
    score_min: float | None = Field(
        None, ge=0, le=1, description="Faces scoring below this are dropped (default: the model's own, "
        "0.6 full range, 0.5 short range)."
    )
    min_face_px: int = Field(
        40, ge=0, le=4096, description="Smallest face side looked for on a whole frame, in pixels: on a frame so "
        "large that it would shrink below what the model resolves, the full-range model also runs on overlapping "
        "tiles. 0: never tile."
    )
    regions: bool = Field(
        True, description="Detect on crops around the gate's moving boxes (motion's) when the frame comes with them."
    )
    region_max_share: float = Field(
        0.5, ge=0, le=1, description="Run on the whole frame instead when the crops around the moving boxes "
        "would cover more than this share of it."
    )


@dataclass(frozen=True)
class FaceState:
    """A worker process's face detector: the loaded model and the settings."""

    model: BlazeFace
    settings: FaceSettings

    def whole_frame(self, image: np.ndarray) -> list[Detection]:
        """Faces on the whole picture, and on tiles where it is too large for a face of `min_face_px` to be seen."""
        height, width = image.shape[:2]
        return detect_in_crops(image, [(0, 0, width, height), *self.tiles(width, height)], self.model.detect)

    def tiles(self, width: int, height: int) -> list[Box]:
        """Tiles in which a face of `min_face_px` keeps RESOLVED_FACE_PX pixels of the input; none where the
        whole frame already does (or for the short-range model, made for faces near the camera).

        Neighbouring tiles overlap by the smallest face the next coarser pass finds (the whole
        frame's), so every smaller face lies whole in some tile. Where that is more than half a
        tile (frames over about 1500 pixels), a level of tiles twice as large comes between.
        """
        min_face, side = self.settings.min_face_px, self.model.side
        if not min_face or self.settings.model != "full":
            return []
        tile, longer = side * min_face // RESOLVED_FACE_PX, max(width, height)
        crops: list[Box] = []
        while tile < longer:
            whole_finds = math.ceil(RESOLVED_FACE_PX * longer / side)
            if whole_finds <= tile // 2:
                return crops + tiles(width, height, tile, whole_finds)
            crops += tiles(width, height, tile, math.ceil(RESOLVED_FACE_PX * 2 * tile / side))
            tile *= 2
        return crops

def setup_face(settings: FaceSettings) -> FaceState:
    """Load the BlazeFace model once per worker process (onnxruntime: CUDA when offered, else the CPU)."""
    return FaceState(BlazeFace(settings.model, settings.score_min), settings)


def _face(detection: Detection, width: int, height: int) -> dict[str, Any]:
    return {
        "box": detection.frame_box(width, height),
        "score": round(float(detection.score), 4),
        "keypoints": {name: [round(px), round(py)] for name, (px, py) in zip(KEYPOINTS, detection.points)},
    }


@processor("face", capabilities=["face_detection"], gated_by="motion", settings=FaceSettings, setup=setup_face)
def detect_faces(frame: Frame, state: FaceState) -> dict[str, Any]:
    """Faces: boxes [x, y, w, h] in frame pixels, scores and six keypoints, best first; where it looked."""
    image = bgr(frame.image)
    settings = state.settings
    boxes = boxes_from(frame.gate_result) if settings.regions else None
    found, regions = detect_in_regions(
        image, boxes, state.model.detect, state.model.side, whole_frame=state.whole_frame,
        max_share=settings.region_max_share,
    )
    faces = [_face(detection, frame.width, frame.height) for detection in found]
    faces = [face for face in faces if face["box"][2] > 0 and face["box"][3] > 0]
    result: dict[str, Any] = {"faces": faces, "count": len(faces)}
    if regions is not None:
        result["regions"] = [list(region) for region in regions]
    return result

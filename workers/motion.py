"""`motion`: per-camera background subtraction; its gate lets moving frames on to `face` and `objects`.

Each worker process keeps one MOG2 background model per camera (created on the camera's first
frame), fed with a grey, downscaled and slightly blurred copy of every frame. Foreground pixels
are cleaned with a morphological opening and a dilation; moving regions smaller than a minimum
area are ignored as noise. The first frames of a camera only teach the model and report no motion.

Routed with `affinity`, so that a camera's frames keep reaching the worker that holds its model.
Settings: the fields of MotionSettings, read from the environment and validated once per worker
process before it serves (a bad value stops the worker with one line naming the variable):

- DETEKTR_MOTION_WIDTH (320): width of the analysed copy, in pixels.
- DETEKTR_MOTION_WARMUP_FRAMES (3): frames of a new camera that only train the model.
- DETEKTR_MOTION_HISTORY (500): MOG2 history, in frames.
- DETEKTR_MOTION_VAR_THRESHOLD (16): MOG2 variance threshold (higher: less sensitive).
- DETEKTR_MOTION_LEARNING_RATE (-1): MOG2 learning rate; -1 lets OpenCV choose (1/frames seen).
- DETEKTR_MOTION_MIN_AREA (0.001): smallest moving region kept, as a fraction of the frame area.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import Frame, ProcessorSettings, processor

from ._common import grey, scale_box, shrink


class MotionSettings(ProcessorSettings):
    """How motion is looked for: the DETEKTR_MOTION_* variables."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_MOTION_")

    width: int = Field(320, ge=32, le=4096, description="Width of the analysed copy, in pixels.")
    warmup_frames: int = Field(3, ge=1, le=10_000, description="Frames of a new camera that only train the model.")
    history: int = Field(500, ge=1, le=100_000, description="MOG2 history, in frames.")
    var_threshold: float = Field(16.0, ge=1, le=1000, description="MOG2 variance threshold (higher: less sensitive).")
    learning_rate: float = Field(
        -1.0, ge=-1, le=1, description="MOG2 learning rate; -1 lets OpenCV choose (1/frames seen)."
    )
    min_area: float = Field(
        0.001, ge=0, le=1, description="Smallest moving region kept, as a fraction of the frame area."
    )


@dataclass
class CameraModel:
    """One camera's background model, with the size it was built for and the frames it has seen."""

    subtractor: Any
    shape: tuple[int, int]
    frames: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class MotionState:
    """A worker process's motion state: its settings and one background model per camera."""

    settings: MotionSettings = field(default_factory=MotionSettings)
    cameras: dict[str, CameraModel] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def model_for(self, camera_id: str, shape: tuple[int, int]) -> CameraModel:
        """The camera's model, created on its first frame and rebuilt when its frame size changes.

        Safe with `--pool threads`: one process whose threads share every camera's model.
        """
        with self.lock:
            return self._model_for(camera_id, shape)

    def _model_for(self, camera_id: str, shape: tuple[int, int]) -> CameraModel:
        model = self.cameras.get(camera_id)
        if model is None or model.shape != shape:
            subtractor = cv2.createBackgroundSubtractorMOG2(
                history=self.settings.history, varThreshold=self.settings.var_threshold, detectShadows=False
            )
            model = self.cameras[camera_id] = CameraModel(subtractor, shape)
        return model


_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


def setup_motion(settings: MotionSettings) -> MotionState:
    """Per-process state: the validated settings and no camera yet."""
    return MotionState(settings)


def _tight_box(mask: np.ndarray, contour: np.ndarray) -> tuple[int, int, int, int]:
    """The box of the moving pixels inside a merged region (the dilation made regions larger)."""
    x, y, w, h = cv2.boundingRect(contour)
    bx, by, bw, bh = cv2.boundingRect(mask[y : y + h, x : x + w])
    return (x + bx, y + by, bw, bh) if bw and bh else (x, y, w, h)


def _no_motion(frames: int, learning: bool) -> dict[str, Any]:
    return {"motion": False, "area": 0.0, "boxes": [], "learning": learning, "frames_seen": frames}


@processor(
    "motion",
    capabilities=["motion_detection"],
    routing="affinity",
    settings=MotionSettings,
    setup=setup_motion,
    gate=lambda result: result["motion"],
)
def detect_motion(frame: Frame, state: MotionState) -> dict[str, Any]:
    """Moving regions against the camera's learnt background: motion, moving fraction, boxes."""
    settings = state.settings
    small, scale_x, scale_y = shrink(grey(frame.image), settings.width)
    small = cv2.GaussianBlur(small, (5, 5), 0)
    model = state.model_for(frame.camera_id, small.shape)
    with model.lock:  # one frame at a time through a camera's model
        mask = model.subtractor.apply(small, learningRate=settings.learning_rate)
        model.frames += 1
        frames_seen = model.frames
    if frames_seen <= settings.warmup_frames:
        return _no_motion(frames_seen, learning=True)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _KERNEL)  # drops isolated noisy pixels
    merged = cv2.dilate(mask, _KERNEL, iterations=2)  # joins the nearby pieces of one moving thing
    contours, _ = cv2.findContours(merged, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    min_pixels = settings.min_area * small.shape[0] * small.shape[1]
    kept = [c for c in contours if cv2.contourArea(c) >= min_pixels]
    if not kept:
        return _no_motion(frames_seen, learning=False)
    region = np.zeros_like(mask)
    cv2.drawContours(region, kept, -1, 255, thickness=cv2.FILLED)
    moving = cv2.bitwise_and(mask, region)
    boxes = [
        scale_box(_tight_box(mask, contour), scale_x, scale_y, frame.width, frame.height)
        for contour in sorted(kept, key=cv2.contourArea, reverse=True)
    ]
    return {
        "motion": True,
        "area": round(float(cv2.countNonZero(moving)) / moving.size, 5),
        "boxes": boxes,
        "learning": False,
        "frames_seen": frames_seen,
    }

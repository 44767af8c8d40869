"""`onnx`: your own ONNX detector (YOLOv8/YOLO11, YOLOv5-style or NanoDet exports), batched where the model allows.

The model contract (a model that breaks it fails at setup, with the reason):

- The file at DETEKTR_ONNX_MODEL loads in onnxruntime (`workers/_onnx.py`: CUDA with
  onnxruntime-gpu, else the CPU), once per worker process.
- Input: its first input, float32 `[N, 3, H, W]`. H and W come from the model; where they are
  dynamic, from DETEKTR_ONNX_INPUT. N may be fixed (frames then run that many at a time) or
  dynamic (a batch of up to 8 frames runs in one call).
- Output, by DETEKTR_ONNX_FORMAT (`auto` tells them apart by the shapes on a zero input):
  - `yolov8` (YOLOv8, YOLO11): one output `[N, 4 + C, A]`; letterboxed RGB input in 0..1.
  - `yolov5`: one output `[N, A, 5 + C]` (boxes, objectness, classes); letterboxed RGB in 0..1.
  - `nanodet`: a class-score `[N, n, C]` and a box-distribution `[N, n, 4 * B]` output per stride,
    or NanoDet-Plus's single `[N, n, C + 4 * B]`; stretched BGR input, NanoDet's mean and std.
  DETEKTR_ONNX_RESIZE=letterbox or stretch overrides how the frame is fitted to the input.
  Boxes in pixels of the input (see `workers/_detections.py` for each layout).
- Class names: DETEKTR_ONNX_LABELS (a file, one name per line, in class order), else the model's
  metadata `names` (as YOLO exports write it: `{0: 'person', 1: 'bicycle', ...}`), else the
  class index as the label.

Results as `objects` gives them, plus the class index: `{"objects": [{"label", "class", "score",
"box": [x, y, w, h]}], "count"}`, boxes in the original frame's pixels, best first, after
class-wise non-maximum suppression.

Settings: the fields of OnnxSettings (DETEKTR_ONNX_*), validated once per worker process before
it serves. Needs DETEKTR_ONNX_MODEL: a worker without it does not serve `onnx`.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import Frame, FrameRejected, ProcessorSettings, processor

from ._common import ImageSize, UserPath, bgr, prepare_batch
from ._detections import (
    STRIDES,
    as_detections,
    decode_nanodet,
    decode_yolov5,
    decode_yolov8,
    letterbox,
    nanodet_input,
    select,
    stretch,
    yolo_input,
)
from ._onnx import OnnxModel, OnnxSetupError, load_session

log = logging.getLogger(__name__)

Format = Literal["yolov8", "yolov5", "nanodet"]
MAX_LABELS_BYTES = 1_000_000
"""Largest labels file read, in bytes."""


class OnnxSettings(ProcessorSettings):
    """Your ONNX model, its output format and how detections are kept: the DETEKTR_ONNX_* variables."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_ONNX_")

    model: UserPath = Field(
        None, description="The ONNX model file (required: a worker without it does not serve `onnx`)."
    )
    format: Literal["auto", "yolov8", "yolov5", "nanodet"] = Field(
        "auto", description="The output layout: yolov8 (YOLOv8, YOLO11), yolov5, nanodet, or auto (from the "
        "output shapes).",
    )
    labels: UserPath = Field(
        None, description="A file of class names, one per line in class order; unset: the model's `names` "
        "metadata, else class indexes.",
    )
    resize: Literal["auto", "letterbox", "stretch"] = Field(
        "auto", description="How a frame becomes the input: letterbox (aspect ratio kept, grey border), stretch, "
        "or auto: letterbox for YOLO formats, stretch for nanodet.",
    )
    input: ImageSize = Field(
        (640, 640), description="The input size WIDTHxHEIGHT where the model's own is dynamic (one number for a "
        "square), sides from 8 to 8192.",
    )
    score_min: float = Field(0.25, ge=0, le=1, description="Detections scoring below this are dropped.")
    nms_iou: float = Field(
        0.45, ge=0, le=1, description="A detection overlapping a better one of its class by more than this IoU is "
        "dropped.",
    )
    max_detections: int = Field(100, ge=1, le=10_000, description="At most this many detections per frame, best first.")


def output_format(shapes: list[tuple[int, ...]], size: tuple[int, int]) -> Format:
    """The format of outputs of these shapes (batch dimension first) for an input of `size` (width, height).

    Several outputs: NanoDet's per-stride heads. One `[N, a, b]` with a < b: YOLOv8's `[N, 4 + C, A]`.
    One `[N, A, k]`: YOLOv5's when A counts 3 anchors per cell of strides 8, 16, 32; NanoDet-Plus's
    when A counts one point per cell of strides 8, 16, 32, 64; else YOLOv5's.
    """
    if len(shapes) > 1:
        return "nanodet"
    shape = shapes[0]
    if len(shape) != 3:
        raise OnnxSetupError(f"an output of shape {list(shape)} is none of the formats (yolov8, yolov5, nanodet)")
    if shape[1] < shape[2]:
        return "yolov8"
    cells = [-(-size[0] // s) * -(-size[1] // s) for s in STRIDES]
    if shape[1] == sum(cells[:4]) and shape[1] != 3 * sum(cells[:3]):
        return "nanodet"
    return "yolov5"


def parse_names(text: str) -> tuple[str, ...]:
    """Class names from a model's `names` metadata: a dict {index: name} or a list, as a Python literal."""
    try:
        names = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return ()
    if isinstance(names, dict) and all(isinstance(k, int) and k >= 0 for k in names):
        return tuple(str(names.get(i, "")) for i in range(max(names, default=-1) + 1))
    if isinstance(names, list | tuple):
        return tuple(str(name) for name in names)
    return ()


def read_labels(path: Path) -> tuple[str, ...]:
    """Class names from a file, one per line in class order (surrounding blanks and trailing empty lines dropped)."""
    if not path.is_file():
        raise OnnxSetupError(f"DETEKTR_ONNX_LABELS={str(path)!r} is not a file")
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise OnnxSetupError(f"DETEKTR_ONNX_LABELS={str(path)!r} is larger than {MAX_LABELS_BYTES} bytes")
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").rstrip().splitlines())


@dataclass(frozen=True)
class OnnxState:
    """A worker process's model: session, format, input size, fixed batch (None: dynamic), names, thresholds."""

    model: OnnxModel
    format: Format
    size: tuple[int, int]
    batch: int | None
    labels: tuple[str, ...]
    thresholds: np.ndarray
    settings: OnnxSettings

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """A frame's image as this model's input image, and where the frame sits in it."""
        resize = self.settings.resize
        if resize == "stretch" or (resize == "auto" and self.format == "nanodet"):
            return stretch(image, self.size)
        return letterbox(image, self.size)

    def to_input(self, images: list[np.ndarray]) -> np.ndarray:
        """Prepared images as one input batch [N, 3, H, W], padded with zeros to a fixed batch size."""
        batch = nanodet_input(images) if self.format == "nanodet" else yolo_input(images)
        if self.batch is not None and len(images) < self.batch:
            batch = np.concatenate([batch, np.zeros((self.batch - len(images), *batch.shape[1:]), batch.dtype)])
        return batch

    def decode(self, outputs: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Image n's corner boxes [A, 4] and class scores [A, C], in input pixels."""
        if self.format == "yolov8":
            return decode_yolov8(outputs[0][n])
        if self.format == "yolov5":
            return decode_yolov5(outputs[0][n])
        return decode_nanodet([output[n] for output in outputs], self.size, len(self.labels) or None)


def _dimension(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def setup_onnx(settings: OnnxSettings) -> OnnxState:
    """Load the model once per worker process, find its format and class names, and try it on a zero input."""
    if settings.model is None:
        raise OnnxSetupError("DETEKTR_ONNX_MODEL is not set: the onnx processor needs the path of an ONNX detector")
    if not settings.model.is_file():
        raise OnnxSetupError(f"DETEKTR_ONNX_MODEL={str(settings.model)!r} is not a file")
    model = load_session(settings.model)
    shape = model.input_shape
    if len(shape) != 4 or _dimension(shape[1]) not in (3, None):
        raise OnnxSetupError(f"{settings.model.name}: its input {list(shape)} is not [N, 3, H, W]")
    height, width = _dimension(shape[2]), _dimension(shape[3])
    size = (width, height) if width and height else settings.input
    batch = _dimension(shape[0])
    try:
        outputs = model.run(np.zeros((batch or 1, 3, size[1], size[0]), np.float32))
    except Exception as exc:  # onnxruntime's own errors
        raise OnnxSetupError(f"{settings.model.name} fails on a zero input of {size[0]}x{size[1]}: {exc}") from exc
    shapes = [tuple(output.shape) for output in outputs]
    fmt: Format = output_format(shapes, size) if settings.format == "auto" else settings.format
    if settings.labels is not None:
        labels = read_labels(settings.labels)
    else:
        labels = parse_names(model.metadata().get("names", ""))
    state = OnnxState(model, fmt, size, batch, labels, np.zeros(0, np.float32), settings)
    try:
        _, scores = state.decode(outputs, 0)
    except (ValueError, IndexError) as exc:
        raise OnnxSetupError(f"{settings.model.name}: outputs {[list(s) for s in shapes]} do not decode as {fmt}: "
                             f"{exc}") from exc
    classes = scores.shape[1]
    if labels and len(labels) != classes:
        log.warning("%s has %d classes but %d class names", settings.model.name, classes, len(labels))
    thresholds = np.full(classes, settings.score_min, np.float32)
    log.info("onnx: %s as %s, input %dx%d, batch %s, %d classes, on %s", settings.model.name, fmt, size[0], size[1],
             batch or "dynamic", classes, model.provider)
    return OnnxState(model, fmt, size, batch, labels, thresholds, settings)


@processor("onnx", capabilities=["onnx_detection"], settings=OnnxSettings, setup=setup_onnx, batch_size=8,
           batch_wait_ms=50, requires_env=["DETEKTR_ONNX_MODEL"])
def run_onnx(frames: list[Frame], state: OnnxState) -> list[dict[str, Any] | FrameRejected]:
    """Your ONNX detector on a batch of frames: label, class, score, box [x, y, w, h] in frame pixels; frame order."""
    results, usable, prepared = prepare_batch(frames, lambda frame: state.prepare(bgr(frame.image)), "not run")
    step = state.batch or len(usable) or 1
    settings = state.settings
    for start in range(0, len(usable), step):
        chunk = prepared[start : start + step]
        outputs = state.model.run(state.to_input([image for image, _ in chunk]))
        for n, (i, (_, placement)) in enumerate(zip(usable[start : start + step], chunk)):
            boxes, scores = state.decode(outputs, n)
            kept = select(boxes, scores, state.thresholds, settings.nms_iou, settings.max_detections)
            found = as_detections(*kept, placement, state.labels, with_class=True)
            results[i] = {"objects": found, "count": len(found)}
    return results

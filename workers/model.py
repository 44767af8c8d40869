"""`model`: runs your own TorchScript detection model on batches of frames.

The model contract (a model that breaks it fails at setup, with the reason):

- The file at DETEKTR_MODEL_PATH holds a TorchScript module (`torch.jit.script(m).save(path)` or
  `torch.jit.trace(m, example).save(path)`), loaded once per worker process, in eval mode.
- Input: one float32 tensor [N, 3, H, W], RGB, values from 0 to 1, on the model's device. W and H
  are DETEKTR_MODEL_INPUT (default 320x320); every frame is resized to exactly that size (the
  aspect ratio is not kept, no letterbox), so train or export the model for stretched input.
- Output: one float tensor [N, K, 6]; row k of image n is (x1, y1, x2, y2, score, class), corners
  in pixels of the W x H input, class an integer index. K is the model's choice (a fixed maximum
  is fine): rows scoring under DETEKTR_MODEL_SCORE_MIN are dropped, so pad with score 0.
  Non-maximum suppression, if needed, is the model's job.

Boxes come back in the original frame's pixels as [x, y, w, h], clipped to the frame.
Settings: the fields of ModelSettings, read from the environment and validated once per worker
process before it serves (a bad value stops the worker with one line naming the variable):

- DETEKTR_MODEL_PATH (required): the TorchScript file.
- DETEKTR_MODEL_INPUT (320x320): the input size WxH (one number for a square).
- DETEKTR_MODEL_SCORE_MIN (0.25): detections scoring below this are dropped.
- DETEKTR_MODEL_MAX_DETECTIONS (100): at most this many detections per frame, best first.
- DETEKTR_MODEL_LABELS (none): class names, comma-separated in class order, added as `label`.
- DETEKTR_MODEL_DEVICE (cuda when available, else cpu): the torch device.

DETEKTR_TORCH_THREADS (torch's default) sets torch's CPU threads (TorchSettings, in `_common`).
Needs torch and DETEKTR_MODEL_PATH: a worker without either does not serve `model`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from detektr import Frame, FrameRejected, ProcessorSettings, processor

from ._common import ImageSize, UserPath, bgr, prepare_batch, torch_device, torch_threads


class ModelContractError(RuntimeError):
    """The model file is missing, does not load, or does not follow the model contract."""


class ModelSettings(ProcessorSettings):
    """Where the model is, its input size, and how its output is read: the DETEKTR_MODEL_* variables."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_MODEL_")

    path: UserPath = Field(
        None, description="The TorchScript model file (required: a worker without it does not serve `model`)."
    )
    input: ImageSize = Field(
        (320, 320), description="The model's input size WIDTHxHEIGHT, e.g. 640x384 (one number for a square), "
        "sides from 8 to 8192.",
    )
    score_min: float = Field(0.25, description="Detections scoring below this are dropped.")
    max_detections: int = Field(
        100, ge=1, le=100_000, description="At most this many detections per frame, best first."
    )
    labels: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Class names, comma-separated in class order, added to detections as `label`; "
        "empty: none.",
    )
    device: str = Field(
        "", description='The torch device, e.g. "cpu" or "cuda:1"; empty: cuda when available, else cpu.'
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        """Comma-separated names, kept in place (an empty name leaves its class without a label)."""
        if isinstance(value, str):
            return tuple(label.strip() for label in value.split(",")) if value.strip() else ()
        return value


@dataclass(frozen=True)
class ModelState:
    """A worker process's model: the loaded module, its device, and the settings."""

    module: Any
    device: Any
    settings: ModelSettings


def check_output(output: Any, batch: int) -> Any:
    """The model's output if it is a [batch, K, 6] float tensor; ModelContractError otherwise."""
    import torch

    if not isinstance(output, torch.Tensor):
        raise ModelContractError(f"the model returned {type(output).__name__}, not a tensor [N, K, 6]")
    if output.dim() != 3 or output.shape[0] != batch or output.shape[2] != 6:
        raise ModelContractError(f"the model returned a tensor of shape {list(output.shape)}, not [{batch}, K, 6]")
    if not output.is_floating_point():
        raise ModelContractError(f"the model returned {output.dtype}, not a float tensor")
    return output


def setup_model(settings: ModelSettings) -> ModelState:
    """Load the TorchScript model once per worker process and check it against the contract."""
    import torch

    if settings.path is None:
        raise ModelContractError(
            "DETEKTR_MODEL_PATH is not set: the model processor needs the path of a TorchScript "
            "detection model (see workers/model.py for the contract)"
        )
    if not settings.path.is_file():
        raise ModelContractError(f"DETEKTR_MODEL_PATH={str(settings.path)!r} is not a file")
    torch_threads()
    device = torch_device(settings.device, "DETEKTR_MODEL_DEVICE")
    try:
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; it still loads and runs
            warnings.filterwarnings("ignore", r".*torch\.jit\.load.* is deprecated", DeprecationWarning)
            module = torch.jit.load(str(settings.path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError or ValueError for files that are not TorchScript
        raise ModelContractError(f"{settings.path} is not a TorchScript model: {exc}") from exc
    module.eval()
    width, height = settings.input
    try:
        with torch.inference_mode():
            output = module(torch.zeros(1, 3, height, width, device=device))
    except Exception as exc:
        raise ModelContractError(f"{settings.path} fails on a [1, 3, {height}, {width}] input: {exc}") from exc
    check_output(output, 1)
    return ModelState(module, device, settings)


def _to_input(images: list[np.ndarray], size: tuple[int, int], device: Any) -> Any:
    """Frames (BGR uint8, any sizes) as one [N, 3, H, W] RGB float tensor in 0..1 on the device."""
    import torch

    resized = np.stack([cv2.resize(image, size, interpolation=cv2.INTER_LINEAR) for image in images])
    batch = torch.from_numpy(resized).to(device)  # [N, H, W, 3] uint8, BGR
    return batch.permute(0, 3, 1, 2)[:, [2, 1, 0]].float().div_(255.0)


def _detections(rows: list[list[float]], frame: Frame, settings: ModelSettings) -> dict[str, Any]:
    """One frame's output rows as JSON detections, in frame pixels, best first."""
    scale_x = frame.width / settings.input[0]
    scale_y = frame.height / settings.input[1]
    found = []
    for x1, y1, x2, y2, score, cls in sorted(rows, key=lambda row: -row[4]):
        if not score >= settings.score_min:  # also drops NaN scores
            continue
        left = min(max(round(min(x1, x2) * scale_x), 0), frame.width)
        right = min(max(round(max(x1, x2) * scale_x), 0), frame.width)
        top = min(max(round(min(y1, y2) * scale_y), 0), frame.height)
        bottom = min(max(round(max(y1, y2) * scale_y), 0), frame.height)
        if right <= left or bottom <= top:
            continue
        detection: dict[str, Any] = {"box": [left, top, right - left, bottom - top], "score": round(score, 4)}
        detection["class"] = int(cls)
        if 0 <= int(cls) < len(settings.labels):
            detection["label"] = settings.labels[int(cls)]
        found.append(detection)
        if len(found) == settings.max_detections:
            break
    return {"detections": found, "count": len(found)}


@processor("model", capabilities=["custom_model"], settings=ModelSettings, setup=setup_model, batch_size=8,
           batch_wait_ms=50, requires_env=["DETEKTR_MODEL_PATH"], requires_packages=["torch"])
def run_model(frames: list[Frame], state: ModelState) -> list[dict[str, Any] | FrameRejected]:
    """Your TorchScript detector on a batch of frames: boxes [x, y, w, h] in frame pixels, in frame order."""
    import torch

    results, usable, images = prepare_batch(frames, lambda frame: bgr(frame.image), "not run")
    if not usable:
        return results
    with torch.inference_mode():
        output = state.module(_to_input(images, state.settings.input, state.device))
        output = check_output(output, len(usable)).float()
        kept = [image[image[:, 4] >= state.settings.score_min].cpu().tolist() for image in output]
    for i, frame_rows in zip(usable, kept):
        results[i] = _detections(frame_rows, frames[i], state.settings)
    return results

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
Settings (environment, read once per worker process in `setup`):

- DETEKTR_MODEL_PATH (required): the TorchScript file.
- DETEKTR_MODEL_INPUT (320x320): the input size WxH (one number for a square).
- DETEKTR_MODEL_SCORE_MIN (0.25): detections scoring below this are dropped.
- DETEKTR_MODEL_MAX_DETECTIONS (100): at most this many detections per frame, best first.
- DETEKTR_MODEL_LABELS (none): class names, comma-separated in class order, added as `label`.
- DETEKTR_MODEL_DEVICE (cuda when available, else cpu); DETEKTR_TORCH_THREADS (torch's default).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detektr import Frame, FrameRejected, processor

from ._common import bgr, env_float, env_int, env_size, prepare_batch, torch_device, torch_threads


class ModelContractError(RuntimeError):
    """The model file is missing, does not load, or does not follow the model contract."""


@dataclass(frozen=True)
class ModelSettings:
    """Where the model is and how its output is read; see the module docstring."""

    path: Path
    input_size: tuple[int, int] = (320, 320)
    score_min: float = 0.25
    max_detections: int = 100
    labels: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> ModelSettings:
        """Read the DETEKTR_MODEL_* variables; DETEKTR_MODEL_PATH is required."""
        path = os.environ.get("DETEKTR_MODEL_PATH", "").strip()
        if not path:
            raise ModelContractError(
                "DETEKTR_MODEL_PATH is not set: the model processor needs the path of a TorchScript "
                "detection model (see workers/model.py for the contract)"
            )
        labels = os.environ.get("DETEKTR_MODEL_LABELS", "")
        return cls(
            path=Path(path).expanduser(),
            input_size=env_size("DETEKTR_MODEL_INPUT", cls.input_size),
            score_min=env_float("DETEKTR_MODEL_SCORE_MIN", cls.score_min),
            max_detections=env_int("DETEKTR_MODEL_MAX_DETECTIONS", cls.max_detections, 1, 100_000),
            labels=tuple(label.strip() for label in labels.split(",")) if labels.strip() else (),
        )


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


def setup_model() -> ModelState:
    """Load the TorchScript model once per worker process and check it against the contract."""
    import torch

    settings = ModelSettings.from_env()
    if not settings.path.is_file():
        raise ModelContractError(f"DETEKTR_MODEL_PATH={str(settings.path)!r} is not a file")
    torch_threads()
    device = torch_device("DETEKTR_MODEL_DEVICE")
    try:
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; it still loads and runs
            warnings.filterwarnings("ignore", r".*torch\.jit\.load.* is deprecated", DeprecationWarning)
            module = torch.jit.load(str(settings.path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError or ValueError for files that are not TorchScript
        raise ModelContractError(f"{settings.path} is not a TorchScript model: {exc}") from exc
    module.eval()
    width, height = settings.input_size
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
    scale_x = frame.width / settings.input_size[0]
    scale_y = frame.height / settings.input_size[1]
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


@processor("model", capabilities=["custom_model"], setup=setup_model, batch_size=8, batch_wait_ms=50,
           requires_env=["DETEKTR_MODEL_PATH"])
def run_model(frames: list[Frame], state: ModelState) -> list[dict[str, Any] | FrameRejected]:
    """Your TorchScript detector on a batch of frames: boxes [x, y, w, h] in frame pixels, in frame order."""
    import torch

    results, usable, images = prepare_batch(frames, lambda frame: bgr(frame.image), "not run")
    if not usable:
        return results
    with torch.inference_mode():
        output = state.module(_to_input(images, state.settings.input_size, state.device))
        output = check_output(output, len(usable)).float()
        kept = [image[image[:, 4] >= state.settings.score_min].cpu().tolist() for image in output]
    for i, frame_rows in zip(usable, kept):
        results[i] = _detections(frame_rows, frames[i], state.settings)
    return results

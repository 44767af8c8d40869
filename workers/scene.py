"""`scene`: camera tampering (covered or blinded lens, defocus, camera turned away), batched with torch.

Frames arrive in batches of up to 8 (or after 50 ms). Each frame becomes a grey thumbnail of
256x144 (aspect ratio not kept); the thumbnails are stacked into one [N, 1, 144, 256] tensor, on
CUDA when there is one, and every measure is computed for the whole batch at once:

- brightness: mean grey level (0-255); contrast: standard deviation of the grey levels.
- sharpness: variance of the Laplacian (a 3x3 conv2d) of the thumbnail normalised to zero mean
  and unit deviation, so that it does not depend on exposure or contrast. Sharp scenes measure
  about 0.3 to 0.4; a 9x9 Gaussian blur of a 640x360 frame about 0.05.
- change: mean absolute difference between the frame and its camera's reference view, both
  pooled to 64x36 and normalised to zero mean and unit deviation (so a global change of light
  does not count). The same view measures under 0.05, a person walking in about 0.25, the
  view shifted by 6% of its width about 0.6, another scene about 1.

Flags (thresholds below: the module constants are the defaults of SceneSettings' fields, each
read from the environment variable in brackets):

- covered: brightness < DARK_MAX [DETEKTR_SCENE_DARK_MAX] or > BRIGHT_MIN [DETEKTR_SCENE_BRIGHT_MIN],
  or contrast < CONTRAST_MIN [DETEKTR_SCENE_CONTRAST_MIN].
- blurred: sharpness < SHARPNESS_MIN [DETEKTR_SCENE_SHARPNESS_MIN], and not covered (a covered
  lens has no edges either; `covered` already explains it).
- scene_changed: change > CHANGE_MIN [DETEKTR_SCENE_CHANGE_MIN] against the camera's reference.
- tampered: any of the three.

The reference view of a camera (kept per worker process; the processor is routed with affinity)
is its first frame that is neither covered nor blurred. Unchanged frames blend into it slowly
(REFERENCE_RATE), so that it follows the light of the day. A camera whose view stays changed
for REBASE_FRAMES frames in a row has been moved for good: the new view becomes its reference.

Settings: the fields of SceneSettings, read from the environment and validated once per worker
process before it serves (a bad value stops the worker with one line naming the variable):

- DETEKTR_SCENE_DARK_MAX (20), DETEKTR_SCENE_BRIGHT_MIN (235), DETEKTR_SCENE_CONTRAST_MIN (8),
  DETEKTR_SCENE_SHARPNESS_MIN (0.1), DETEKTR_SCENE_CHANGE_MIN (0.5): the thresholds above.
- DETEKTR_SCENE_REFERENCE_RATE (0.05) and DETEKTR_SCENE_REBASE_FRAMES (30): see above.
- DETEKTR_SCENE_DEVICE (cuda when available, else cpu): the torch device.

DETEKTR_TORCH_THREADS (torch's default) sets torch's CPU threads (TorchSettings, in `_common`).
Needs torch: a worker without it does not serve `scene`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import Frame, FrameRejected, ProcessorSettings, processor

from ._common import grey, prepare_batch, torch_device, torch_threads

THUMB_SIZE = (256, 144)
"""Width and height of the grey thumbnail every measure is computed on."""
POOL = 4
"""The change is measured on thumbnails average-pooled by this factor (64x36)."""

DARK_MAX = 20.0
"""Mean grey level below which the lens counts as covered (a hand, paint, a cap)."""
BRIGHT_MIN = 235.0
"""Mean grey level above which the lens counts as blinded (a torch, a laser, white paint)."""
CONTRAST_MIN = 8.0
"""Standard deviation of the grey levels below which the view counts as covered (spray, fabric)."""
SHARPNESS_MIN = 0.1
"""Normalised variance of the Laplacian below which the view counts as out of focus."""
CHANGE_MIN = 0.5
"""Normalised mean absolute difference to the reference above which the view counts as changed."""
REFERENCE_RATE = 0.05
"""How much of each unchanged frame blends into its camera's reference."""
REBASE_FRAMES = 30
"""Changed frames in a row after which the new view becomes the camera's reference."""


class SceneSettings(ProcessorSettings):
    """The thresholds in force and the device: the DETEKTR_SCENE_* variables (defaults: the module constants)."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_SCENE_")

    dark_max: float = Field(
        DARK_MAX, ge=0, le=255, description="Mean grey level below which the lens counts as covered."
    )
    bright_min: float = Field(
        BRIGHT_MIN, ge=0, le=255, description="Mean grey level above which the lens counts as blinded."
    )
    contrast_min: float = Field(
        CONTRAST_MIN, ge=0, le=255,
        description="Standard deviation of the grey levels below which the view counts as covered.",
    )
    sharpness_min: float = Field(
        SHARPNESS_MIN, ge=0, description="Normalised variance of the Laplacian below which the view counts as blurred."
    )
    change_min: float = Field(
        CHANGE_MIN, ge=0,
        description="Normalised mean absolute difference to the reference above which the view counts as changed.",
    )
    reference_rate: float = Field(
        REFERENCE_RATE, ge=0, le=1, description="How much of each unchanged frame blends into its camera's reference."
    )
    rebase_frames: int = Field(
        REBASE_FRAMES, ge=1, le=1_000_000,
        description="Changed frames in a row after which the new view becomes the camera's reference.",
    )
    device: str = Field(
        "", description='The torch device, e.g. "cpu" or "cuda:1"; empty: cuda when available, else cpu.'
    )


@dataclass
class SceneState:
    """A worker process's tamper detector: device, Laplacian kernel, and each camera's reference."""

    device: Any
    laplacian: Any
    settings: SceneSettings = field(default_factory=SceneSettings)
    references: dict[str, Any] = field(default_factory=dict)
    """camera id -> its reference view, a pooled [1, 36, 64] float tensor of grey levels."""
    changed_in_a_row: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Held while a batch reads and updates the references (worker threads share this state)."""


def setup_scene(settings: SceneSettings) -> SceneState:
    """Pick the device and build the Laplacian kernel, once per worker process."""
    import torch

    torch_threads()
    device = torch_device(settings.device, "DETEKTR_SCENE_DEVICE")
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=device).view(1, 1, 3, 3)
    return SceneState(device, kernel, settings)


def _standardise(x: Any) -> Any:
    """Each image of [N, 1, H, W] shifted to zero mean and scaled to unit deviation (flat ones stay 0)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / std.clamp(min=1.0)


def measure(thumbs: Any, references: Any, has_reference: Any, laplacian: Any) -> dict[str, Any]:
    """Every measure for a whole batch: thumbnails [N, 1, H, W] of grey levels (float), references
    [N, 1, H/POOL, W/POOL] and a [N] mask of frames that have one. Returns [N] tensors, and `pooled`."""
    import torch.nn.functional as F

    brightness = thumbs.mean(dim=(1, 2, 3))
    contrast = thumbs.std(dim=(1, 2, 3))
    sharpness = F.conv2d(_standardise(thumbs), laplacian).var(dim=(1, 2, 3))
    pooled = F.avg_pool2d(thumbs, POOL)
    difference = (_standardise(pooled) - _standardise(references)).abs().mean(dim=(1, 2, 3))
    change = difference * has_reference
    return {"brightness": brightness, "contrast": contrast, "sharpness": sharpness, "change": change, "pooled": pooled}


def thumbnail(frame: Frame) -> np.ndarray:
    """The frame as a grey THUMB_SIZE thumbnail (FrameRejected when its image is unusable)."""
    return cv2.resize(grey(frame.image), THUMB_SIZE, interpolation=cv2.INTER_AREA)


def _update_reference(state: SceneState, camera_id: str, pooled: Any, flags: dict[str, bool]) -> None:
    """Keep the camera's reference view: set, blended, left alone, or replaced after a lasting change."""
    settings = state.settings
    if flags["covered"] or flags["blurred"]:
        return
    reference = state.references.get(camera_id)
    if reference is None:
        state.references[camera_id] = pooled.clone()
    elif not flags["scene_changed"]:
        reference.mul_(1 - settings.reference_rate).add_(pooled, alpha=settings.reference_rate)
        state.changed_in_a_row[camera_id] = 0
    else:
        in_a_row = state.changed_in_a_row.get(camera_id, 0) + 1
        if in_a_row >= settings.rebase_frames:
            state.references[camera_id] = pooled.clone()
            in_a_row = 0
        state.changed_in_a_row[camera_id] = in_a_row


@processor(
    "scene",
    capabilities=["tamper_detection"],
    routing="affinity",
    settings=SceneSettings,
    setup=setup_scene,
    batch_size=8,
    batch_wait_ms=50,
    requires_packages=["torch"],
)
def detect_tampering(frames: list[Frame], state: SceneState) -> list[dict[str, Any] | FrameRejected]:
    """Covered or blinded lens, defocus and a turned camera, for a batch of frames, in their order."""
    import torch

    results, usable, thumbs = prepare_batch(frames, thumbnail, "not measured")
    if not usable:
        return results
    settings, device = state.settings, state.device
    cameras = [frames[i].camera_id for i in usable]
    empty = torch.zeros(1, THUMB_SIZE[1] // POOL, THUMB_SIZE[0] // POOL, device=device)
    with state.lock, torch.inference_mode():
        batch = torch.from_numpy(np.stack(thumbs)).to(device).unsqueeze(1).float()
        references = torch.stack([state.references.get(camera, empty) for camera in cameras])
        has_reference = torch.tensor([camera in state.references for camera in cameras], device=device)
        measured = measure(batch, references, has_reference, state.laplacian)
        values = torch.stack([measured[k] for k in ("brightness", "contrast", "sharpness", "change")], 1).tolist()
        for n, (i, camera) in enumerate(zip(usable, cameras)):
            brightness, contrast, sharpness, change = values[n]
            covered = brightness < settings.dark_max or brightness > settings.bright_min
            covered = covered or contrast < settings.contrast_min
            flags = {
                "covered": covered,
                "blurred": sharpness < settings.sharpness_min and not covered,
                "scene_changed": change > settings.change_min,
            }
            _update_reference(state, camera, measured["pooled"][n], flags)
            results[i] = {
                **flags,
                "tampered": any(flags.values()),
                "brightness": round(brightness, 2),
                "contrast": round(contrast, 2),
                "sharpness": round(sharpness, 4),
                "change": round(change, 4),
            }
    return results

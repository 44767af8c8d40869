"""Helpers shared by the shipped detectors: torch's settings, input checks, devices.

Not a processor module (the leading underscore keeps discovery away from it). Nothing here
reads the environment at import time: each processor's settings model is read and validated by
the worker before the processor's `setup` runs; TorchSettings is read by `torch_threads`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import NoDecode, SettingsConfigDict

from detektr import FrameRejected, ProcessorSettings
from detektr.config import load_processor_settings


class TorchSettings(ProcessorSettings):
    """Torch's own settings in each worker process that runs a torch processor (`scene`, `model`)."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_TORCH_")

    threads: int = Field(
        0, ge=0, le=1024,
        description="Torch's intra-op CPU threads in each worker process (0: torch's default, one per core). "
        "With several worker processes per machine, 1 or 2 keeps them from fighting over the cores.",
    )


SIDES = (8, 8192)
"""Smallest and largest side of a model input size setting (DETEKTR_MODEL_INPUT, DETEKTR_ONNX_INPUT), in pixels."""


def parse_size(value: object) -> object:
    """A size setting, `WxH` or a single number (a square), as (width, height); other values unchanged."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if not isinstance(value, str):
        return value
    try:
        numbers = [int(part) for part in value.strip().lower().split("x")]
    except ValueError:
        raise ValueError("should be WIDTHxHEIGHT, e.g. 640x384, or one number for a square") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2:
        raise ValueError("should be WIDTHxHEIGHT, e.g. 640x384, or one number for a square")
    return tuple(numbers)


def check_sides(value: tuple[int, int]) -> tuple[int, int]:
    """The size if both sides are within SIDES; ValueError otherwise."""
    if not all(SIDES[0] <= side <= SIDES[1] for side in value):
        raise ValueError(f"should be WIDTHxHEIGHT with sides from {SIDES[0]} to {SIDES[1]}")
    return value


ImageSize = Annotated[tuple[int, int], NoDecode, BeforeValidator(parse_size), AfterValidator(check_sides)]
"""A `WxH` size setting (or one number for a square), as (width, height), each side within SIDES."""

UserPath = Annotated[Path | None, AfterValidator(lambda value: value.expanduser() if value is not None else None)]
"""A path setting, `~` expanded."""


def checked_image(image: Any) -> np.ndarray:
    """The frame's image if it is a non-empty uint8 BGR (or grey) array; FrameRejected otherwise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise FrameRejected("image is not a uint8 array")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)) or image.size == 0:
        raise FrameRejected(f"image of shape {image.shape} is not a BGR or grey picture")
    return image


def grey(image: np.ndarray) -> np.ndarray:
    """The image as one grey channel (checked first)."""
    import cv2

    image = checked_image(image)
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def bgr(image: np.ndarray) -> np.ndarray:
    """The image as three BGR channels (checked first; grey is repeated)."""
    import cv2

    image = checked_image(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    return cv2.cvtColor(image.reshape(image.shape[0], image.shape[1]), cv2.COLOR_GRAY2BGR)


def shrink(image: np.ndarray, max_width: int) -> tuple[np.ndarray, float, float]:
    """Downscale to at most `max_width` pixels wide (0: never), keeping the aspect ratio.

    Returns the image and the x and y factors that map its pixels back to the original's.
    """
    import cv2

    height, width = image.shape[:2]
    if max_width <= 0 or width <= max_width:
        return image, 1.0, 1.0
    new_height = max(1, round(height * max_width / width))
    small = cv2.resize(image, (max_width, new_height), interpolation=cv2.INTER_AREA)
    return small, width / max_width, height / new_height


def scale_box(box: Any, scale_x: float, scale_y: float, width: int, height: int) -> list[int]:
    """An [x, y, w, h] box from a resized image back in original pixels, clipped to the frame."""
    x, y, w, h = (float(v) for v in box)
    x0 = min(max(round(x * scale_x), 0), width)
    y0 = min(max(round(y * scale_y), 0), height)
    x1 = min(max(round((x + w) * scale_x), 0), width)
    y1 = min(max(round((y + h) * scale_y), 0), height)
    return [x0, y0, x1 - x0, y1 - y0]


def torch_device(wanted: str, setting: str = "the device") -> Any:
    """The torch device `wanted` (e.g. "cpu", "cuda:1"; "" for auto: CUDA when present, else CPU).

    `setting` names where `wanted` came from (e.g. DETEKTR_SCENE_DEVICE), for the error when
    CUDA is asked for and missing.
    """
    import torch

    wanted = wanted.strip()
    if wanted:
        device = torch.device(wanted)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{setting}={wanted!r} but CUDA is not available in this process")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_threads() -> None:
    """Set torch's intra-op CPU threads in this process: TorchSettings.threads, else torch's default.

    Reads DETEKTR_TORCH_THREADS (ConfigError naming it when its value is bad).

    With several worker processes per machine, 1 or 2 avoids them fighting over the cores. Set
    even when unset: in a prefork worker's child, torch reports its default thread count but ran
    the stand-in model at half the speed of a threads-pool worker until the count was set again
    after the fork (see bench/results.md, 'Torch in prefork workers').
    """
    import torch

    threads = load_processor_settings(TorchSettings).threads
    torch.set_num_threads(threads or torch.get_num_threads())


def prepare_batch(
    frames: Sequence[Any], prepare: Callable[[Any], Any], not_run: str
) -> tuple[list[Any], list[int], list[Any]]:
    """Prepare each frame of a batch; a frame whose `prepare` raises FrameRejected keeps that as its result.

    Returns (results, usable, prepared): one result slot per frame (a FrameRejected saying
    `not_run` until filled in), the indexes of the frames that were prepared, and what
    `prepare` returned for each of them, in the same order.
    """
    results: list[Any] = [FrameRejected(not_run)] * len(frames)
    usable, prepared = [], []
    for i, frame in enumerate(frames):
        try:
            prepared.append(prepare(frame))
        except FrameRejected as rejected:
            results[i] = rejected
            continue
        usable.append(i)
    return results, usable, prepared

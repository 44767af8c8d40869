"""Helpers shared by the shipped detectors: settings from the environment, input checks, devices.

Not a processor module (the leading underscore keeps discovery away from it). Nothing here
reads the environment at import time: settings are read in each processor's `setup`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from detektr import FrameRejected


def env_float(name: str, default: float, low: float | None = None, high: float | None = None) -> float:
    """A float from the environment (default when unset or empty), checked against its bounds."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}={raw!r} is outside [{low}, {high}]")
    return value


def env_int(name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    """An integer from the environment (default when unset or empty), checked against its bounds."""
    value = env_float(name, default, low, high)
    if value != int(value):
        raise ValueError(f"{name}={os.environ[name]!r} is not an integer")
    return int(value)


def env_size(name: str, default: tuple[int, int]) -> tuple[int, int]:
    """A (width, height) from `WxH` or a single number for a square, e.g. DETEKTR_MODEL_INPUT=640x384."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    parts = raw.split("x")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not WIDTHxHEIGHT") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not all(8 <= n <= 8192 for n in numbers):
        raise ValueError(f"{name}={raw!r} is not WIDTHxHEIGHT with sides from 8 to 8192")
    return numbers[0], numbers[1]


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


def torch_device(env_name: str) -> Any:
    """The torch device named by `env_name` (e.g. "cpu", "cuda:1"), else CUDA when present, else CPU."""
    import torch

    wanted = os.environ.get(env_name, "").strip()
    if wanted:
        device = torch.device(wanted)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{env_name}={wanted!r} but CUDA is not available in this process")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_threads() -> None:
    """Set torch's intra-op CPU threads in this process: DETEKTR_TORCH_THREADS, else torch's default.

    With several worker processes per machine, 1 or 2 avoids them fighting over the cores. Set
    even when unset: in a prefork worker's child, torch reports its default thread count but ran
    the stand-in model at half the speed of a threads-pool worker until the count was set again
    after the fork (see docs/operations.md).
    """
    import torch

    threads = env_int("DETEKTR_TORCH_THREADS", 0, 0, 1024)
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

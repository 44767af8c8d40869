"""Test images for the shipped detectors, and frames composed from them with known answers.

The photographs live in the shared data folder next to the repository (/work/shared/data):
`astronaut.png` has one frontal face at about (177, 66, 95, 95) and one person (the astronaut,
marked by hand at PERSON_IN_PHOTO); `coffee.png` has no face and no person, vehicle or animal.
Frames paste a crop around the face, or the whole photo scaled, onto the coffee background at
known places.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detektr import Frame

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = next((folder for folder in (REPO_ROOT.parent / "shared" / "data", REPO_ROOT.parent.parent / "shared" / "data")
             if folder.is_dir()), REPO_ROOT.parent / "shared" / "data")
"""The shared folder next to the repository (or next to the folder of worktrees that holds it)."""
FRAME_SIZE = (640, 360)
"""Width and height of the composed frames."""
FACE_IN_PHOTO = (177, 66, 95, 95)
"""Where the face is in astronaut.png (x, y, w, h)."""
PERSON_IN_PHOTO = (18, 12, 347, 500)
"""Where the astronaut is in astronaut.png (x, y, w, h), marked by hand: from her hair to the bottom edge,
from her left sleeve to her right shoulder (the helmet in front of her is not part of her)."""
CROP = (140, 30, 170, 170)
"""The part of astronaut.png that is pasted (x, y, w, h): the face with some head and shoulders."""


def data_path(name: str) -> Path:
    """The path of a shared test image."""
    return DATA / name


def read_image(name: str) -> np.ndarray:
    """A shared test image as BGR uint8."""
    image = cv2.imread(str(data_path(name)), cv2.IMREAD_COLOR)
    assert image is not None, f"missing test image {data_path(name)}"
    return image


def make_frame(image: np.ndarray, camera_id: str = "cam1", frame_id: str = "f0", timestamp: float = 0.0) -> Frame:
    """A Frame around an image, as a worker would pass it."""
    return Frame(image=image, frame_id=frame_id, camera_id=camera_id, timestamp=timestamp)


def iou(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


class Composer:
    """Builds frames: the coffee background with the astronaut's face pasted at (x, y)."""

    def __init__(self, size: tuple[int, int] = FRAME_SIZE) -> None:
        self.size = size
        self.background = cv2.resize(read_image("coffee.png"), size, interpolation=cv2.INTER_AREA)
        x, y, w, h = CROP
        self.crop = read_image("astronaut.png")[y : y + h, x : x + w].copy()

    def empty(self) -> np.ndarray:
        """The background alone."""
        return self.background.copy()

    def with_face(self, x: int, y: int, face_px: int | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The background with the crop's top-left corner at (x, y), and where the face is now.

        With `face_px` the crop is scaled so that the face is that many pixels a side.
        """
        image = self.background.copy()
        crop, scale = self.scaled_crop(face_px)
        h, w = crop.shape[:2]
        image[y : y + h, x : x + w] = crop
        fx, fy, fw, fh = FACE_IN_PHOTO
        return image, (x + round((fx - CROP[0]) * scale), y + round((fy - CROP[1]) * scale), round(fw * scale),
                       round(fh * scale))

    def scaled_crop(self, face_px: int | None = None) -> tuple[np.ndarray, float]:
        """The pasted crop, scaled so that its face is `face_px` a side (as it is by default), and the scale."""
        if face_px is None:
            return self.crop, 1.0
        scale = face_px / FACE_IN_PHOTO[2]
        side = round(self.crop.shape[1] * scale)
        return cv2.resize(self.crop, (side, side), interpolation=cv2.INTER_AREA), scale

    def with_person(self, side: int, x: int, y: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The background with the whole astronaut photo scaled to `side` x `side` at (x, y), and where she is."""
        image = self.background.copy()
        image[y : y + side, x : x + side] = cv2.resize(read_image("astronaut.png"), (side, side),
                                                       interpolation=cv2.INTER_AREA)
        scale = side / 512
        px, py, pw, ph = PERSON_IN_PHOTO
        return image, (round(x + px * scale), round(y + py * scale), round(pw * scale), round(ph * scale))

    def pasted_box(self, x: int, y: int, face_px: int | None = None) -> tuple[int, int, int, int]:
        """Where the whole pasted crop is, at (x, y)."""
        h, w = self.scaled_crop(face_px)[0].shape[:2]
        return (x, y, w, h)


@pytest.fixture(scope="session")
def composer() -> Composer:
    """Frames of 640x360 composed from the shared photographs."""
    return Composer()

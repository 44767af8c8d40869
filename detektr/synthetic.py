"""A synthetic camera: moving shapes drawn with OpenCV, for the demo, load tests and `capture synthetic`."""

from __future__ import annotations

import math
import random

import numpy as np


class SyntheticCamera:
    """Renders frames of a scene with a few shapes moving on a textured background."""

    def __init__(self, camera_id: str, width: int = 640, height: int = 360, seed: int | None = None) -> None:
        import cv2

        self._cv2 = cv2
        self.camera_id = camera_id
        self.width, self.height = width, height
        rng = random.Random(seed if seed is not None else camera_id)
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack(
            [(xx * 255 // max(1, width - 1)), (yy * 255 // max(1, height - 1)), np.full_like(xx, rng.randint(40, 200))],
            axis=-1,
        ).astype(np.uint8)
        noise = np.random.default_rng(rng.randint(0, 2**31)).integers(0, 24, size=base.shape, dtype=np.uint8)
        self._background = cv2.add(base, noise)
        self._shapes = [
            (rng.uniform(0.5, 2.0), rng.uniform(0, 2 * math.pi), rng.randint(10, max(11, height // 6)),
             tuple(rng.randint(0, 255) for _ in range(3)))
            for _ in range(3)
        ]

    def render(self, index: int) -> np.ndarray:
        """The BGR frame number `index` (deterministic)."""
        cv2 = self._cv2
        frame = self._background.copy()
        t = index / 15.0
        for speed, phase, radius, color in self._shapes:
            x = int((0.5 + 0.4 * math.sin(speed * t + phase)) * self.width)
            y = int((0.5 + 0.35 * math.cos(0.7 * speed * t + phase)) * self.height)
            cv2.circle(frame, (x, y), radius, color, thickness=-1)
        cv2.putText(frame, f"{self.camera_id} #{index}", (10, self.height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 1, cv2.LINE_AA)
        return frame

    def jpeg(self, index: int, quality: int = 80) -> bytes:
        """Frame number `index` encoded as JPEG."""
        ok, buf = self._cv2.imencode(".jpg", self.render(index), [self._cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()

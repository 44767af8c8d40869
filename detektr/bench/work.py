"""The work every compared system does for a frame: decode the JPEG, take `sample`'s statistics."""

from __future__ import annotations

import cv2
import numpy as np


def decode_and_measure(data: bytes) -> dict:
    """What the `sample` processor computes, from the JPEG bytes."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    mean, std = cv2.meanStdDev(image)
    mean_bgr = [round(float(v), 2) for v in mean.ravel()]
    return {"width": image.shape[1], "height": image.shape[0], "mean_bgr": mean_bgr,
            "std_bgr": [round(float(v), 2) for v in std.ravel()], "brightness": round(sum(mean_bgr) / 3, 2)}

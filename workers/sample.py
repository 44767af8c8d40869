"""`sample`: frame size and basic pixel statistics. The smallest useful processor, and a template."""

from __future__ import annotations

import cv2

from detektr import Frame, processor


@processor("sample", capabilities=["sample_processing"], capacity=2, result_stream="sample:results")
def sample_stats(frame: Frame) -> dict:
    """Frame size, mean and standard deviation per BGR channel, and mean brightness."""
    mean, std = cv2.meanStdDev(frame.image)
    mean_bgr = [round(float(v), 2) for v in mean.ravel()]
    return {
        "width": frame.width,
        "height": frame.height,
        "mean_bgr": mean_bgr,
        "std_bgr": [round(float(v), 2) for v in std.ravel()],
        "brightness": round(sum(mean_bgr) / 3, 2),
    }

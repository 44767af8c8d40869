"""`sample`: frame size and basic pixel statistics. The smallest useful processor, and a template."""

from __future__ import annotations

import numpy as np

from detektr import Frame, processor


@processor("sample", capabilities=["sample_processing"], capacity=2, result_stream="sample:results")
def sample_stats(frame: Frame) -> dict:
    """Frame size, mean and standard deviation per BGR channel, and mean brightness."""
    pixels = frame.image.reshape(-1, 3).astype(np.float32)
    mean = pixels.mean(axis=0)
    std = pixels.std(axis=0)
    return {
        "width": frame.width,
        "height": frame.height,
        "mean_bgr": [round(float(v), 2) for v in mean],
        "std_bgr": [round(float(v), 2) for v in std],
        "brightness": round(float(mean.mean()), 2),
    }

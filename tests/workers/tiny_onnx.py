"""Tiny ONNX detectors built with torch.onnx.export, whose outputs encode known boxes in each format.

Each model ignores what it sees except for the colour scores: a box's class scores are either a
constant (0.9 for its class) or, with `colour_scores`, the mean of the input's R, G and B planes
(classes 0, 1, 2), so that frames of different colours get different classes and a batch's
results can be told apart. Boxes are corners (x1, y1, x2, y2) in pixels of the model's input.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

CLASSES = 3
"""Classes of every tiny model: red, green, blue."""


def cells(size: tuple[int, int], strides: tuple[int, ...]) -> list[int]:
    """Grid cells per stride for an input of `size` (width, height)."""
    return [-(-size[0] // s) * -(-size[1] // s) for s in strides]


class Constant(torch.nn.Module):
    """Returns fixed output tensors (batch dimension first, expanded to the input's), plus colour scores."""

    def __init__(self, outputs: list[torch.Tensor], colour_rows: list[tuple[int, int, int, int]]) -> None:
        super().__init__()
        for i, output in enumerate(outputs):
            self.register_buffer(f"out{i}", output)
        self.count = len(outputs)
        self.colour_rows = colour_rows
        """(output, axis of anchors: 1 or 2, anchor index, first class column) that get the colour means."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        means = x.mean(dim=(2, 3))  # [N, 3]: R, G, B for the YOLO formats
        outs = []
        for i in range(self.count):
            base = getattr(self, f"out{i}")
            out = base.expand(x.shape[0], -1, -1) + 0 * means[:, :1, None]
            for output, axis, anchor, column in self.colour_rows:
                if output == i:
                    out = out + _colour(base.shape, means, axis, anchor, column)
            outs.append(out)
        return outs


def _colour(shape: torch.Size, means: torch.Tensor, axis: int, anchor: int, column: int) -> torch.Tensor:
    """The colour means of each image [N, 3] placed at an anchor's class columns of a [N, *shape[1:]] output."""
    rows, cols = shape[1], shape[2]
    if axis == 2:  # [4 + C, A]: the classes run down column `anchor`
        return torch.nn.functional.pad(means[:, :, None], (anchor, cols - anchor - 1, column, rows - column - CLASSES))
    return torch.nn.functional.pad(means[:, None, :], (column, cols - column - CLASSES, anchor, rows - anchor - 1))


def export(module: torch.nn.Module, path: Path, size: tuple[int, int], outputs: int, dynamic_batch: bool,
           fixed_batch: int = 1, names: str | None = None) -> Path:
    """Export `module` to ONNX at `path` with an input [N, 3, H, W] (N dynamic or `fixed_batch`); add `names`."""
    output_names = [f"output{i}" for i in range(outputs)]
    axes = {name: {0: "batch"} for name in ["images", *output_names]} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(fixed_batch, 3, size[1], size[0]),), str(path), dynamo=False,
                          input_names=["images"], output_names=output_names, dynamic_axes=axes, opset_version=17)
    if names is not None:
        import onnx

        model = onnx.load(str(path))
        model.metadata_props.add(key="names", value=names)
        onnx.save(model, str(path))
    return path


def yolov8(path: Path, boxes: list[tuple[float, float, float, float, int]], size: tuple[int, int] = (64, 64),
           colour_scores: bool = False, dynamic_batch: bool = True, fixed_batch: int = 1,
           names: str | None = None) -> Path:
    """A YOLOv8-style model: one output [N, 4 + C, A], box k at anchor k (centre, size), score 0.9 for its class."""
    anchors = sum(cells(size, (8, 16, 32)))
    out = torch.zeros(1, 4 + CLASSES, anchors)
    colour = []
    for k, (x1, y1, x2, y2, cls) in enumerate(boxes):
        out[0, :4, k] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        if colour_scores:
            colour.append((0, 2, k, 4))
        else:
            out[0, 4 + cls, k] = 0.9
    return export(Constant([out], colour), path, size, 1, dynamic_batch, fixed_batch, names)


def yolov5(path: Path, boxes: list[tuple[float, float, float, float, int]], size: tuple[int, int] = (64, 64),
           colour_scores: bool = False, dynamic_batch: bool = True, fixed_batch: int = 1,
           names: str | None = None) -> Path:
    """A YOLOv5-style model: one output [N, A, 5 + C] (3 anchors per cell), box k at row k, objectness 1."""
    anchors = 3 * sum(cells(size, (8, 16, 32)))
    out = torch.zeros(1, anchors, 5 + CLASSES)
    colour = []
    for k, (x1, y1, x2, y2, cls) in enumerate(boxes):
        out[0, k, :5] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0])
        if colour_scores:
            colour.append((0, 1, k, 5))
        else:
            out[0, k, 5 + cls] = 0.9
    return export(Constant([out], colour), path, size, 1, dynamic_batch, fixed_batch, names)


def one_hot_bins(distances: tuple[int, int, int, int], bins: int) -> torch.Tensor:
    """Bin logits [4 * bins] whose softmax puts (almost) all weight on each side's distance, in bins."""
    logits = torch.full((4, bins), -30.0)
    for side, d in enumerate(distances):
        logits[side, d] = 30.0
    return logits.reshape(-1)


def nanodet(path: Path, cells_and_bins: list[tuple[int, int, int, tuple[int, int, int, int], int]],
            size: tuple[int, int] = (64, 64), bins: int = 8, plus: bool = False, names: str | None = None) -> Path:
    """A NanoDet-style model. Each entry (stride, col, row, (left, top, right, bottom) in bins, class) puts
    a 0.9 score for the class at that cell, and one-hot bin logits for the distances.

    Per-stride outputs (scores [N, n, C] and distributions [N, n, 4 * bins], in a shuffled order), or
    with `plus` NanoDet-Plus's single [N, n, C + 4 * bins] over strides 8, 16, 32, 64.
    """
    strides = (8, 16, 32, 64) if plus else (8, 16, 32)
    counts = cells(size, strides)
    scores = {s: torch.zeros(1, n, CLASSES) for s, n in zip(strides, counts)}
    dists = {s: torch.zeros(1, n, 4 * bins) for s, n in zip(strides, counts)}
    for stride, col, row, distances, cls in cells_and_bins:
        cols = -(-size[0] // stride)
        scores[stride][0, row * cols + col, cls] = 0.9
        dists[stride][0, row * cols + col] = one_hot_bins(distances, bins)
    if plus:
        out = torch.cat([torch.cat([scores[s], dists[s]], dim=2) for s in strides], dim=1)
        return export(Constant([out], []), path, size, 1, True, names=names)
    outputs = [scores[32], dists[8], scores[8], dists[32], dists[16], scores[16]]  # told apart by shape
    return export(Constant(outputs, []), path, size, len(outputs), True, names=names)

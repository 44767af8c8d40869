"""Decoding detector outputs (`workers/_detections.py`) on small arrays worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from detektr.workers._detections import (
    NANODET_MEAN,
    NANODET_STD,
    Placement,
    as_detections,
    decode_nanodet,
    decode_yolov5,
    decode_yolov8,
    grid,
    letterbox,
    nanodet_input,
    select,
    split_nanodet_level,
    stretch,
    yolo_input,
)


def test_letterbox_keeps_the_aspect_ratio_and_maps_back():
    image = np.full((360, 640, 3), 200, np.uint8)
    boxed, placement = letterbox(image, (320, 320))
    assert boxed.shape == (320, 320, 3)
    assert (placement.scale_x, placement.scale_y, placement.pad_x, placement.pad_y) == (0.5, 0.5, 0, 70)
    assert (boxed[:70] == 114).all() and (boxed[70:250] == 200).all() and (boxed[250:] == 114).all()
    corners = placement.to_frame(np.array([[0.0, 70.0, 320.0, 250.0], [-5.0, 0.0, 400.0, 300.0]]))
    assert corners.tolist() == [[0, 0, 640, 360], [0, 0, 640, 360]]  # the second clipped to the frame


def test_stretch_maps_back():
    image = np.zeros((480, 640, 3), np.uint8)
    resized, placement = stretch(image, (64, 64))
    assert resized.shape == (64, 64, 3)
    assert placement.to_frame(np.array([[12.0, 12.0, 44.0, 44.0]])).tolist() == [[120, 90, 440, 330]]


def test_inputs_are_nchw_in_each_models_colour_order():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0], image[..., 2] = 10, 250  # B, R
    yolo = yolo_input([image])
    assert yolo.shape == (1, 3, 2, 2) and yolo.dtype == np.float32
    assert yolo[0, 0, 0, 0] == pytest.approx(250 / 255) and yolo[0, 2, 0, 0] == pytest.approx(10 / 255)
    nano = nanodet_input([image, image])
    assert nano.shape == (2, 3, 2, 2)
    assert nano[1, 0, 0, 0] == pytest.approx((10 - NANODET_MEAN[0]) / NANODET_STD[0])
    assert nano[1, 2, 0, 0] == pytest.approx((250 - NANODET_MEAN[2]) / NANODET_STD[2])


def test_yolov8_and_yolov5_rows():
    v8 = np.zeros((4 + 2, 3), np.float32)
    v8[:, 1] = [50, 40, 20, 10, 0.1, 0.8]  # centre (50, 40), 20x10, class 1
    boxes, scores = decode_yolov8(v8)
    assert boxes[1].tolist() == [40, 35, 60, 45] and scores[1].tolist() == pytest.approx([0.1, 0.8])
    v5 = np.zeros((3, 5 + 2), np.float32)
    v5[2] = [50, 40, 20, 10, 0.5, 0.2, 0.9]
    boxes, scores = decode_yolov5(v5)
    assert boxes[2].tolist() == [40, 35, 60, 45] and scores[2].tolist() == pytest.approx([0.1, 0.45])


def test_grid_finds_the_stride_of_a_level():
    assert grid(2704, (416, 416)) == (8, 52, 52)
    assert grid(169, (416, 416)) == (32, 13, 13)
    assert grid(40 * 23, (320, 180)) == (8, 40, 23)  # 180 / 8 = 22.5: the last row is partly outside
    with pytest.raises(ValueError):
        grid(1000, (416, 416))


def test_nanodet_levels_decode_the_expected_distance_of_each_side():
    size = (32, 32)  # strides 8 and 16: 16 and 4 cells
    scores8, scores16 = np.zeros((16, 2), np.float32), np.zeros((4, 2), np.float32)
    dist8, dist16 = np.zeros((16, 4 * 8), np.float32), np.zeros((4, 4 * 8), np.float32)
    scores8[5, 1] = 0.7  # cell (1, 1) at stride 8: centre (12, 12)
    bins = np.full((4, 8), -50.0, np.float32)
    bins[0, 1] = bins[1, 1] = 50  # left 1 bin, top 1 bin
    bins[2, 2:4] = 50  # right: half on bin 2, half on bin 3 -> 2.5 bins
    bins[3, 0] = 50  # bottom 0
    dist8[5] = bins.reshape(-1)
    boxes, scores = decode_nanodet([dist16, scores8, scores16, dist8], size)
    assert boxes.shape == (20, 4) and scores.shape == (20, 2)
    assert boxes[5].tolist() == pytest.approx([12 - 8, 12 - 8, 12 + 20, 12])
    assert scores[5].tolist() == pytest.approx([0, 0.7])


def test_nanodet_level_outputs_are_told_apart():
    a, b = np.zeros((4, 80)), np.zeros((4, 44))
    assert split_nanodet_level(b, a, 80) == (a, b)
    assert split_nanodet_level(a, b, None)[0] is a  # 44 = 4 x 11 bins
    one_class, bins = np.zeros((4, 1)), np.zeros((4, 40))
    assert split_nanodet_level(bins, one_class, None)[0] is one_class  # 1 is no multiple of 4
    with pytest.raises(ValueError, match="labels file"):
        split_nanodet_level(np.zeros((4, 8)), np.zeros((4, 40)), None)


def test_select_thresholds_per_class_and_suppresses_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.6], [0.3, 0.0]], np.float32)
    kept_boxes, kept_scores, classes = select(boxes, scores, np.array([0.5, 0.5], np.float32), 0.5, 10)
    # box 1 overlaps box 0 (IoU 0.68) in the same class: dropped; box 2 is another class: kept; box 3 too weak
    assert classes.tolist() == [0, 1] and kept_scores.tolist() == pytest.approx([0.9, 0.6])
    assert kept_boxes.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10]]
    _, _, classes = select(boxes, scores, np.array([0.2, np.inf], np.float32), 0.5, 10)
    assert classes.tolist() == [0, 0]  # class 1 not wanted; box 3 reaches 0.2
    _, kept_scores, _ = select(boxes, scores, np.array([0.2, 0.2], np.float32), 0.5, 1)
    assert kept_scores.tolist() == pytest.approx([0.9])
    empty = select(boxes, scores, np.array([0.95, 0.95], np.float32), 0.5, 10)
    assert [len(part) for part in empty] == [0, 0, 0]


def test_as_detections_rounds_clips_and_drops_empty_boxes():
    placement = Placement(0.5, 0.5, 0, 0, 100, 100)
    boxes = np.array([[10.2, 20.0, 30.0, 41.0], [60.0, 60.0, 60.2, 90.0], [40.0, 40.0, 80.0, 80.0]])
    found = as_detections(boxes, np.array([0.91234, 0.8, 0.5]), np.array([1, 0, 7]), placement, ("a", "b"),
                          with_class=True)
    assert found == [
        {"label": "b", "score": 0.9123, "box": [20, 40, 40, 42], "class": 1},
        {"label": "7", "score": 0.5, "box": [80, 80, 20, 20], "class": 7},  # clipped at 100; no name: its index
    ]

"""`face`: the Haar cascade finds the pasted face where it was pasted, and nothing on empty frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from detektr import FrameRejected
from detektr.workers.face import FaceSettings, detect_faces, setup_face

from .conftest import FACE_IN_PHOTO, iou, make_frame, read_image


@pytest.fixture(scope="module")
def state():
    return setup_face(FaceSettings())


def test_declared_gated_by_motion():
    spec = detect_faces.spec
    assert spec.capabilities == ("face_detection",) and spec.gated_by == "motion" and spec.setup is not None


def test_finds_the_astronaut_face(state):
    result = detect_faces(make_frame(read_image("astronaut.png")), state)
    assert result["count"] == len(result["faces"]) == 1
    assert iou(result["faces"][0]["box"], FACE_IN_PHOTO) >= 0.5
    assert result["faces"][0]["score"] > 0
    json.dumps(result)


@pytest.mark.parametrize("x,y", [(0, 0), (100, 50), (250, 100), (400, 150), (470, 190)])
def test_finds_a_pasted_face_where_it_was_pasted(state, composer, x, y):
    image, face = composer.with_face(x, y)
    result = detect_faces(make_frame(image), state)
    assert result["count"] == 1, result
    assert iou(result["faces"][0]["box"], face) >= 0.5


def test_nothing_on_the_empty_background(state, composer):
    assert detect_faces(make_frame(composer.empty()), state) == {"faces": [], "count": 0}
    assert detect_faces(make_frame(read_image("coffee.png")), state) == {"faces": [], "count": 0}


def test_boxes_are_in_original_pixels_when_a_large_frame_is_downscaled(state, composer):
    image, face = composer.with_face(250, 100)
    large = cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_LINEAR)  # 3x, downscaled to 960 inside
    assert state.settings.max_width < 1920
    result = detect_faces(make_frame(large), state)
    expected = [3 * v for v in face]
    assert result["count"] >= 1
    assert max(iou(f["box"], expected) for f in result["faces"]) >= 0.5
    assert all(0 <= f["box"][0] and f["box"][0] + f["box"][2] <= 1920 for f in result["faces"])


def test_grey_frames_work_and_garbage_is_rejected(state, composer):
    image, face = composer.with_face(100, 50)
    result = detect_faces(make_frame(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)), state)
    assert result["count"] == 1 and iou(result["faces"][0]["box"], face) >= 0.5
    with pytest.raises(FrameRejected):
        detect_faces(make_frame(np.zeros((10, 10, 3), dtype=np.float32)), state)

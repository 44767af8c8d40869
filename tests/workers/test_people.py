"""`people`: HOG + SVM with non-maximum suppression.

The shared photographs hold no standing person, so no test claims a true detection. What is
tested: well-formed results, nothing on the coffee photo or on composed frames, suppression,
the score threshold, and that boxes come back in original pixels when a frame is downscaled.
HOG does fire on astronaut.png, at about (319, 343, 73, 146): that is her helmet (a false
positive of the default people detector), which serves the coordinate tests.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from detektr.workers.people import PeopleSettings, PeopleState, detect_people, setup_people, suppress

from .conftest import iou, make_frame, read_image


@pytest.fixture(scope="module")
def state():
    return setup_people(PeopleSettings())


def test_declared_gated_by_motion():
    spec = detect_people.spec
    assert spec.capabilities == ("person_detection",) and spec.gated_by == "motion"


def test_results_are_well_formed_json(state):
    result = detect_people(make_frame(read_image("astronaut.png")), state)
    assert result["count"] == len(result["people"])
    for person in result["people"]:
        assert set(person) == {"box", "score"} and len(person["box"]) == 4
        assert all(type(v) is int for v in person["box"]) and type(person["score"]) is float
        x, y, w, h = person["box"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 512 and y + h <= 512
    assert json.loads(json.dumps(result)) == result


def test_no_people_on_the_coffee_photo_or_composed_frames(state, composer):
    assert detect_people(make_frame(read_image("coffee.png")), state) == {"people": [], "count": 0}
    for x in (0, 250, 470):
        assert detect_people(make_frame(composer.with_face(x, 100)[0]), state)["count"] == 0


def test_frames_smaller_than_the_window_give_nothing(state):
    assert detect_people(make_frame(np.zeros((100, 50, 3), np.uint8)), state) == {"people": [], "count": 0}


def test_boxes_of_a_downscaled_frame_are_in_original_pixels(state):
    photo = read_image("astronaut.png")
    large = cv2.resize(photo, (1280, 1280), interpolation=cv2.INTER_LINEAR)
    assert state.settings.max_width == 640
    # what HOG finds on the 640-wide copy, mapped back by hand
    small = cv2.resize(large, (640, 640), interpolation=cv2.INTER_AREA)
    boxes, scores = state.hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
    assert len(boxes) >= 1, "HOG no longer fires on the helmet; pick another frame for this test"
    expected = [[2 * int(v) for v in box] for box, score in zip(boxes, scores.ravel()) if score > 0.3]
    result = detect_people(make_frame(large), state)
    assert result["count"] >= 1
    for person in result["people"]:
        assert max(iou(person["box"], box) for box in expected) >= 0.9


def test_score_threshold_drops_weak_hits(state):
    photo = make_frame(read_image("astronaut.png"))
    found = detect_people(photo, state)["people"]
    assert found
    strict = PeopleState(state.hog, PeopleSettings(score_min=max(p["score"] for p in found) + 0.01))
    assert detect_people(photo, strict)["count"] == 0


def test_suppression_keeps_the_best_of_overlapping_boxes():
    boxes = [[10, 10, 64, 128], [14, 12, 64, 128], [200, 10, 64, 128], [12, 8, 64, 128], [300, 300, 64, 128]]
    scores = [0.9, 1.5, 0.8, 0.4, 0.1]
    assert suppress(boxes, scores, score_min=0.3, iou=0.45) == [1, 2]
    assert suppress([], [], 0.3, 0.45) == []

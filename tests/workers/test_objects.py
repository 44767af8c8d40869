"""`objects`: the shipped NanoDet-m on the shared photographs and on frames composed from them.

Ground truth: the astronaut in astronaut.png, marked by hand (PERSON_IN_PHOTO), and wherever the
photo is pasted; the coffee photo holds no person, vehicle or animal.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detektr import Frame
from detektr.config import ConfigError, load_processor_settings
from detektr.workers import objects as objects_module
from detektr.workers._coco import ANIMALS, COCO_LABELS, VEHICLES
from detektr.workers._hog import HogPeople, suppress
from detektr.workers._onnx import CPU, CUDA, OnnxSetupError, providers, shipped_model
from detektr.workers.objects import MODEL_FILE, ObjectsSettings, detect_objects, find_objects, setup_objects

from .conftest import PERSON_IN_PHOTO, Composer, iou, make_frame, read_image

LIVING_OR_MOVING = {"person", *VEHICLES, *ANIMALS}


@pytest.fixture(scope="module")
def state():
    return setup_objects(ObjectsSettings())


@pytest.fixture(scope="module")
def wide() -> Composer:
    """Frames of 1280x720."""
    return Composer((1280, 720))


def people(result: dict) -> list[dict]:
    return [o for o in result["objects"] if o["label"] == "person"]


def test_declared_for_objects_and_people_gated_by_motion():
    spec = detect_objects.spec
    assert spec.capabilities == ("object_detection", "person_detection") and spec.gated_by == "motion"
    assert spec.batch_size is None and not spec.requires_packages


def test_the_astronaut_is_a_person_where_she_is(state):
    result = detect_objects(make_frame(read_image("astronaut.png")), state)
    found = people(result)
    assert found and found[0] == result["objects"][0], result  # the surest detection
    assert iou(found[0]["box"], PERSON_IN_PHOTO) >= 0.5
    assert len(found) == 1 or all(iou(p["box"], PERSON_IN_PHOTO) < 0.3 for p in found[1:])


def test_results_are_well_formed_json(state):
    result = detect_objects(make_frame(read_image("astronaut.png")), state)
    assert result["count"] == len(result["objects"]) > 0
    for found in result["objects"]:
        assert set(found) == {"label", "score", "box"} and found["label"] in COCO_LABELS
        assert all(type(v) is int for v in found["box"]) and type(found["score"]) is float
        x, y, w, h = found["box"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 512 and y + h <= 512
        assert 0.35 <= found["score"] <= 1
    scores = [o["score"] for o in result["objects"]]
    assert scores == sorted(scores, reverse=True)
    assert json.loads(json.dumps(result)) == result


def test_nothing_living_or_moving_on_the_coffee_photo(state, wide):
    for image in (read_image("coffee.png"), wide.empty(), Composer().empty()):
        found = detect_objects(make_frame(image), state)["objects"]
        assert not [o for o in found if o["label"] in LIVING_OR_MOVING], found


def test_the_astronaut_pasted_into_a_wide_frame_is_found_where_she_was_pasted(state, wide):
    """Across 30 placements (three sizes, all over a 1280x720 frame), at the default threshold."""
    found_at, misplaced = [], []
    for side in (240, 360, 480):
        for x in np.linspace(0, 1280 - side, 5).astype(int):
            for y in (0, 720 - side):
                image, truth = wide.with_person(side, int(x), y)
                found = people(detect_objects(make_frame(image), state))
                found_at.append(any(iou(p["box"], truth) >= 0.5 for p in found))
                misplaced += [(p, truth) for p in found if iou(p["box"], truth) < 0.3]
    assert sum(found_at) >= 0.9 * len(found_at), found_at  # 28 of 30 when measured; NanoDet-m is a small model
    assert not misplaced  # and never a person anywhere else


def behind_motion(image: np.ndarray, boxes: list) -> Frame:
    """A frame as it reaches `objects` behind motion's open gate, with motion's result."""
    return Frame(image=image, frame_id="f0", camera_id="cam1", timestamp=0.0,
                 gate_result={"motion": True, "area": 0.01, "boxes": [list(b) for b in boxes]})


def test_distant_people_missed_on_the_whole_frame_are_found_around_motion(state, wide):
    """Squeezed with the whole 1280x720 frame into 416x416, a person 80-160 px tall is lost; on a crop
    around motion's box (at least 416 px a side) she keeps her pixels. 24 placements all over the frame."""
    on_whole_frame, around_motion = [], []
    for side in (80, 120, 160):
        for x, y in itertools.product((40, 400, 760, 1280 - side - 40), (40, 720 - side - 40)):
            image, truth = wide.with_person(side, x, y)
            on_whole_frame.append(any(iou(p["box"], truth) >= 0.5
                                      for p in people(detect_objects(make_frame(image), state))))
            result = detect_objects(behind_motion(image, [(x, y, side, side)]), state)
            around_motion.append(any(iou(p["box"], truth) >= 0.5 for p in people(result)))
            assert len(result["regions"]) == 1 and result["regions"][0][2] == result["regions"][0][3] >= 416
            assert all(0 <= o["box"][0] and o["box"][0] + o["box"][2] <= 1280 for o in result["objects"])
    assert sum(on_whole_frame) == 0, on_whole_frame
    assert sum(around_motion) >= 0.9 * len(around_motion), around_motion  # 23 of 24 when measured


def test_motion_boxes_are_ignored_when_regions_are_off_or_motion_covers_most_of_the_frame(wide):
    image, truth = wide.with_person(360, 600, 200)
    off = detect_objects(behind_motion(image, [(600, 200, 360, 360)]), setup_objects(ObjectsSettings(regions=False)))
    assert "regions" not in off and any(iou(p["box"], truth) >= 0.5 for p in people(off))
    everywhere = detect_objects(behind_motion(image, [(0, 0, 1280, 700)]), setup_objects(ObjectsSettings()))
    assert "regions" not in everywhere and any(iou(p["box"], truth) >= 0.5 for p in people(everywhere))


def test_nothing_living_or_moving_around_motion_on_the_background(state, wide):
    result = detect_objects(behind_motion(wide.empty(), [(300, 300, 60, 80), (900, 100, 120, 90)]), state)
    assert result["regions"] and not [o for o in result["objects"] if o["label"] in LIVING_OR_MOVING]


def test_a_crop_gives_boxes_in_the_crops_pixels(state, wide):
    image, truth = wide.with_person(300, 600, 200)
    x0, y0 = 500, 100
    crop = image[y0 : y0 + 500, x0 : x0 + 600]
    found = [o for o in find_objects(crop, state) if o["label"] == "person"]
    moved = (truth[0] - x0, truth[1] - y0, truth[2], truth[3])
    assert found and max(iou(p["box"], moved) for p in found) >= 0.5, (found, moved)


def test_the_label_filter_and_per_label_thresholds(monkeypatch):
    photo = make_frame(read_image("astronaut.png"))
    monkeypatch.setenv("DETEKTR_OBJECTS_LABELS", "car, dog")
    assert detect_objects(photo, setup_objects(load_processor_settings(ObjectsSettings)))["objects"] == []
    monkeypatch.setenv("DETEKTR_OBJECTS_LABELS", "person")
    monkeypatch.setenv("DETEKTR_OBJECTS_SCORE_MIN", "0.1")
    loose = detect_objects(photo, setup_objects(load_processor_settings(ObjectsSettings)))["objects"]
    assert loose and {o["label"] for o in loose} == {"person"}
    best = max(o["score"] for o in loose)
    monkeypatch.setenv("DETEKTR_OBJECTS_LABEL_SCORE_MIN", f"person={best + 0.001:.4f}")
    assert detect_objects(photo, setup_objects(load_processor_settings(ObjectsSettings)))["objects"] == []


def test_max_detections_keeps_the_best(monkeypatch):
    photo = make_frame(read_image("astronaut.png"))
    monkeypatch.setenv("DETEKTR_OBJECTS_SCORE_MIN", "0.1")
    many = detect_objects(photo, setup_objects(load_processor_settings(ObjectsSettings)))["objects"]
    assert len(many) >= 3
    monkeypatch.setenv("DETEKTR_OBJECTS_MAX_DETECTIONS", "2")
    assert detect_objects(photo, setup_objects(load_processor_settings(ObjectsSettings)))["objects"] == many[:2]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DETEKTR_OBJECTS_LABELS", "person,persn", "'persn' is not one of the 80 COCO labels"),
        ("DETEKTR_OBJECTS_LABEL_SCORE_MIN", "person", "label=score pairs"),
        ("DETEKTR_OBJECTS_LABEL_SCORE_MIN", "person=high", "should be a number"),
        ("DETEKTR_OBJECTS_LABEL_SCORE_MIN", "person=1.5", "from 0 to 1"),
        ("DETEKTR_OBJECTS_LABEL_SCORE_MIN", "unicorn=0.5", "'unicorn' is not one of"),
        ("DETEKTR_OBJECTS_DETECTOR", "yolo", "'nanodet' or 'hog'"),
        ("DETEKTR_ONNXRUNTIME_PROVIDER", "tpu", "'auto', 'cpu' or 'cuda'"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(monkeypatch, variable, value, message):
    from detektr.workers._onnx import OnnxRuntimeSettings

    monkeypatch.setenv(variable, value)
    model = OnnxRuntimeSettings if variable.startswith("DETEKTR_ONNXRUNTIME_") else ObjectsSettings
    with pytest.raises(ConfigError) as refused:
        load_processor_settings(model)
    assert str(refused.value).startswith(f"{variable}: ") and message in str(refused.value)


def test_thresholds_per_class():
    settings = ObjectsSettings(labels=("person", "car"), score_min=0.4, label_score_min={"car": 0.6, "dog": 0.2})
    thresholds = settings.thresholds()
    assert thresholds.shape == (80,) and thresholds[0] == pytest.approx(0.4) and thresholds[2] == pytest.approx(0.6)
    assert np.isinf(thresholds[COCO_LABELS.index("dog")]) and np.isinf(thresholds[1])


def test_providers_prefer_cuda_when_offered():
    assert providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert providers("auto", ["AzureExecutionProvider", CPU]) == [CPU]
    assert providers("cpu", [CUDA, CPU]) == [CPU]
    with pytest.raises(OnnxSetupError, match="install onnxruntime-gpu"):
        providers("cuda", [CPU])


def test_the_model_and_its_notices_ship_inside_the_package():
    path = shipped_model(MODEL_FILE)
    folder = Path(path).parent
    assert path.stat().st_size > 10_000_000
    assert "MIT License" in (folder / "LICENSE.human-models").read_text()
    notice = (folder / "NOTICE").read_text()
    assert "NanoDet" in notice and "Apache License" in notice and MODEL_FILE in notice
    with pytest.raises(OnnxSetupError, match="missing"):
        shipped_model("no-such-model.onnx")


def test_importing_does_not_need_onnxruntime():
    assert "onnxruntime" not in vars(objects_module)


# The HOG fallback (DETEKTR_OBJECTS_DETECTOR=hog): people only, OpenCV's HOG + SVM.


@pytest.fixture(scope="module")
def hog_state():
    return setup_objects(ObjectsSettings(detector="hog"))


def test_hog_fallback_gives_people_in_the_same_shape(hog_state):
    assert hog_state.model is None and isinstance(hog_state.hog, HogPeople)
    result = detect_objects(make_frame(read_image("astronaut.png")), hog_state)
    # HOG fires on the astronaut's helmet, about (319, 343, 73, 146): a false hit, but it shows the shape
    assert result["count"] == len(result["objects"]) >= 1
    assert all(set(o) == {"label", "score", "box"} and o["label"] == "person" for o in result["objects"])
    assert detect_objects(make_frame(read_image("coffee.png")), hog_state) == {"objects": [], "count": 0}


def test_hog_fallback_boxes_of_a_downscaled_frame_are_in_original_pixels(hog_state):
    large = cv2.resize(read_image("astronaut.png"), (1280, 1280), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(large, (640, 640), interpolation=cv2.INTER_AREA)
    boxes, scores = hog_state.hog.hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
    expected = [[2 * int(v) for v in box] for box, score in zip(boxes, np.asarray(scores).ravel()) if score > 0.3]
    found = detect_objects(make_frame(large), hog_state)["objects"]
    assert expected and found
    assert all(max(iou(o["box"], box) for box in expected) >= 0.9 for o in found)


def test_hog_fallback_respects_the_label_filter():
    state = setup_objects(ObjectsSettings(detector="hog", labels=("car",)))
    assert detect_objects(make_frame(read_image("astronaut.png")), state)["objects"] == []


def test_hog_suppression_keeps_the_best_of_overlapping_boxes():
    boxes = [[10, 10, 64, 128], [14, 12, 64, 128], [200, 10, 64, 128], [12, 8, 64, 128], [300, 300, 64, 128]]
    scores = [0.9, 1.5, 0.8, 0.4, 0.1]
    assert suppress(boxes, scores, score_min=0.3, iou=0.45) == [1, 2]
    assert suppress([], [], 0.3, 0.45) == []

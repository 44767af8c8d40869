"""`scene`: tamper flags for a whole batch at once, with a reference view per camera."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from detektr import FrameRejected
from detektr.config import load_processor_settings
from detektr.workers.scene import SceneSettings, detect_tampering, setup_scene

from .conftest import make_frame, read_image

FLAGS = ("covered", "blurred", "scene_changed", "tampered")


@pytest.fixture
def state():
    return setup_scene(SceneSettings())


@pytest.fixture(scope="module")
def views(composer):
    clean = composer.empty()
    other = cv2.resize(read_image("astronaut.png"), (640, 360), interpolation=cv2.INTER_AREA)
    return {
        "clean": clean,
        "black": np.zeros_like(clean),
        "blinded": np.full_like(clean, 250),
        "blurred": cv2.GaussianBlur(clean, (15, 15), 0),
        "darker": (clean * 0.5).astype(np.uint8),
        "person": composer.with_face(200, 100)[0],
        "turned": other,
    }


def flags(result):
    return {name for name in FLAGS if result[name]}


def frames(images, camera_id="cam1"):
    return [make_frame(image, camera_id, f"f{i}") for i, image in enumerate(images)]


def test_declared_batched():
    spec = detect_tampering.spec
    assert spec.batch_size == 8 and spec.batch_wait_ms == 50 and spec.capabilities == ("tamper_detection",)


def test_runs_on_cuda_when_there_is_one(state):
    torch = pytest.importorskip("torch")
    assert state.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert state.laplacian.device.type == state.device.type


def test_clean_frame_is_not_flagged(state, views):
    [result] = detect_tampering(frames([views["clean"]]), state)
    assert flags(result) == set()
    assert result["change"] == 0.0  # the camera's first frame is its reference
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize("view,expected", [("black", {"covered"}), ("blinded", {"covered"}), ("blurred", {"blurred"})])
def test_tampered_frames_are_flagged(state, views, view, expected):
    [result] = detect_tampering(frames([views[view]], camera_id=f"new-{view}"), state)
    assert flags(result) == expected | {"tampered"}


def test_a_batch_of_8_gives_8_results_in_order(state, views):
    order = ["clean", "black", "clean", "blurred", "blinded", "darker", "person", "blurred"]
    results = detect_tampering(frames([views[name] for name in order]), state)
    assert len(results) == 8
    expected = {
        "clean": set(),
        "darker": set(),
        "person": set(),
        "black": {"covered", "tampered"},
        "blinded": {"covered", "tampered"},
        "blurred": {"blurred", "tampered"},
    }
    assert [flags(r) - {"scene_changed"} for r in results] == [expected[name] for name in order]
    assert [r["brightness"] < 1 for r in results] == [name == "black" for name in order]


def test_batched_measures_equal_one_frame_at_a_time(views):
    images = [views[name] for name in ("clean", "blurred", "person", "darker")]
    batched = detect_tampering(frames(images), setup_scene(SceneSettings()))
    single = setup_scene(SceneSettings())
    one_by_one = [detect_tampering(frames([image]), single)[0] for image in images]
    for a, b in zip(batched, one_by_one):
        for key in ("brightness", "contrast", "sharpness"):
            assert a[key] == pytest.approx(b[key], abs=1e-3)


def test_a_turned_camera_is_a_scene_change_and_a_person_is_not(state, views):
    detect_tampering(frames([views["clean"]] * 4), state)
    person, darker, turned = detect_tampering(frames([views["person"], views["darker"], views["turned"]]), state)
    assert not person["scene_changed"] and not darker["scene_changed"]
    assert turned["scene_changed"] and turned["tampered"] and not turned["covered"] and not turned["blurred"]
    assert turned["change"] > 2 * person["change"]


def test_each_camera_has_its_own_reference(state, views):
    detect_tampering(frames([views["clean"]], "a") + frames([views["turned"]], "b"), state)
    a, b = detect_tampering(frames([views["turned"]], "a") + frames([views["turned"]], "b"), state)
    assert a["scene_changed"] and not b["scene_changed"]


def test_covered_frames_do_not_become_the_reference(state, views):
    detect_tampering(frames([views["black"], views["blurred"]]), state)
    assert state.references == {}
    [clean] = detect_tampering(frames([views["clean"]]), state)
    assert clean["change"] == 0.0 and "cam1" in state.references


def test_a_lasting_new_view_becomes_the_reference(state, views):
    state.settings = SceneSettings(rebase_frames=3)
    detect_tampering(frames([views["clean"]]), state)
    results = detect_tampering(frames([views["turned"]] * 4), state)
    assert all(r["scene_changed"] for r in results)  # the whole batch compares with the old view
    [after] = detect_tampering(frames([views["turned"]]), state)
    assert not after["scene_changed"]


def test_unusable_frames_are_rejected_alone(state, views):
    batch = frames([views["clean"], np.zeros((0, 3), np.uint8), views["black"]])
    clean, bad, black = detect_tampering(batch, state)
    assert isinstance(bad, FrameRejected)
    assert flags(clean) == set() and "covered" in flags(black)


def test_thresholds_come_from_the_environment(monkeypatch, views):
    monkeypatch.setenv("DETEKTR_SCENE_SHARPNESS_MIN", "0")
    [result] = detect_tampering(frames([views["blurred"]]), setup_scene(load_processor_settings(SceneSettings)))
    assert not result["blurred"]

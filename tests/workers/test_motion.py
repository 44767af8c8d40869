"""`motion`: background subtraction per camera: nothing while learning or on a static scene, boxes on movement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detektr.config import ConfigError, load_processor_settings
from detektr.workers.motion import MotionSettings, MotionState, detect_motion, setup_motion

from .conftest import iou, make_frame


def noisy(image: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """The image with camera-like sensor noise."""
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def feed(state, images, camera_id="cam1"):
    return [detect_motion(make_frame(image, camera_id, f"f{i}"), state) for i, image in enumerate(images)]


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_declared_with_affinity_and_a_gate():
    spec = detect_motion.spec
    assert spec.routing == "affinity" and spec.capabilities == ("motion_detection",)
    assert spec.gate({"motion": True}) is True and spec.gate({"motion": False}) is False


def test_setup_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DETEKTR_MOTION_MIN_AREA", "0.01")
    monkeypatch.setenv("DETEKTR_MOTION_WARMUP_FRAMES", "7")
    state = setup_motion(load_processor_settings(MotionSettings))
    assert state.settings.min_area == 0.01 and state.settings.warmup_frames == 7 and state.cameras == {}
    monkeypatch.setenv("DETEKTR_MOTION_WIDTH", "lots")
    with pytest.raises(ConfigError, match="DETEKTR_MOTION_WIDTH: Input should be a valid integer") as refused:
        load_processor_settings(MotionSettings)
    assert "lots" not in str(refused.value)


def test_learning_frames_report_no_motion_even_when_things_move(composer):
    state = MotionState(MotionSettings(warmup_frames=3))
    images = [composer.with_face(50 + 60 * i, 100)[0] for i in range(3)]
    results = feed(state, images)
    assert [r["motion"] for r in results] == [False, False, False]
    assert [r["learning"] for r in results] == [True, True, True]


def test_static_scene_has_no_motion_after_learning(composer, rng):
    state = setup_motion(MotionSettings())
    results = feed(state, [noisy(composer.empty(), rng) for _ in range(40)])
    after = results[state.settings.warmup_frames :]
    assert after and not any(r["motion"] for r in after)
    assert all(r["boxes"] == [] and r["area"] == 0.0 and not r["learning"] for r in after)


def test_moving_face_is_found_where_it_is(composer, rng):
    state = setup_motion(MotionSettings())
    feed(state, [noisy(composer.empty(), rng) for _ in range(10)])
    for step in range(8):
        x, y = 40 + 50 * step, 120
        image, _ = composer.with_face(x, y)
        result = detect_motion(make_frame(noisy(image, rng), "cam1", f"m{step}"), state)
        assert result["motion"] is True, step
        _, _, w, h = composer.pasted_box(x, y)
        assert result["area"] == pytest.approx(w * h / (640 * 360), rel=0.3)
        # against the learnt empty background, the pasted crop is what moved
        assert iou(result["boxes"][0], composer.pasted_box(x, y)) >= 0.7, (step, result["boxes"])
        json.dumps(result)


def test_boxes_are_in_original_pixels(composer, rng):
    state = setup_motion(MotionSettings())
    big = lambda image: np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # noqa: E731 - 1280x720
    feed(state, [big(noisy(composer.empty(), rng)) for _ in range(10)])
    image, _ = composer.with_face(300, 150)
    result = detect_motion(make_frame(big(noisy(image, rng))), state)
    x, y, w, h = composer.pasted_box(300, 150)
    assert result["motion"] and iou(result["boxes"][0], [2 * x, 2 * y, 2 * w, 2 * h]) >= 0.6


def test_tiny_changes_are_ignored(composer, rng):
    state = setup_motion(MotionSettings())
    feed(state, [noisy(composer.empty(), rng) for _ in range(10)])
    image = noisy(composer.empty(), rng)
    image[200:203, 300:303] = 255 - image[200:203, 300:303]  # a 3x3 speck of a 640x360 frame
    assert detect_motion(make_frame(image), state)["motion"] is False


def test_cameras_have_their_own_background(composer, rng):
    state = setup_motion(MotionSettings())
    still = composer.empty()
    with_face, _ = composer.with_face(200, 100)
    feed(state, [noisy(still, rng) for _ in range(10)], "a")
    feed(state, [noisy(with_face, rng) for _ in range(10)], "b")
    # the face is background for camera b, and new for camera a
    assert detect_motion(make_frame(noisy(with_face, rng), "b"), state)["motion"] is False
    assert detect_motion(make_frame(noisy(with_face, rng), "a"), state)["motion"] is True
    assert set(state.cameras) == {"a", "b"}


def test_a_new_frame_size_starts_learning_again(composer, rng):
    state = setup_motion(MotionSettings())
    feed(state, [noisy(composer.empty(), rng) for _ in range(10)])
    result = detect_motion(make_frame(noisy(composer.empty()[:300, :500], rng)), state)
    assert result["learning"] is True and result["motion"] is False and result["frames_seen"] == 1

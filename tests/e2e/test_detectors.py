"""The shipped detectors through the real pipeline, on frames composed from real photographs."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from detektr import keys
from tests.conftest import Cluster, wait_for
from tests.e2e.util import producer, results
from tests.workers import tiny_onnx
from tests.workers.conftest import Composer, iou

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.e2e

ONNX_BOX_IN_INPUT = (80, 110, 240, 250)
"""The tiny ONNX model's one box, in its 320x320 input (a 640x360 frame fills rows 70-250, at half scale)."""
LIVING_OR_MOVING = {"person", "bicycle", "car", "motorcycle", "bus", "train", "truck", "boat", "bird", "cat", "dog",
                    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}


class CornerBox(torch.nn.Module):
    """A stand-in detector: one box over the lower middle of the input, scored by mean brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        score = x.mean(dim=(1, 2, 3)).unsqueeze(1)
        box = torch.tensor([w * 0.25, h * 0.5, w * 0.75, h * 1.0], device=x.device).expand(n, 4)
        return torch.cat([box, score, torch.zeros_like(score)], dim=1).unsqueeze(1)


@pytest.fixture(scope="module")
def running(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    model = tmp_path_factory.mktemp("model") / "corner.pt"
    torch.jit.script(CornerBox()).save(str(model))
    onnx_model = tiny_onnx.yolov8(model.parent / "tiny.onnx", [(*ONNX_BOX_IN_INPUT, 1)], size=(320, 320),
                                  names="{0: 'cat', 1: 'car'}")
    cluster.env.update(DETEKTR_MODEL_PATH=str(model), DETEKTR_MODEL_INPUT="160x120", DETEKTR_MODEL_SCORE_MIN="0",
                       DETEKTR_ONNX_MODEL=str(onnx_model), DETEKTR_ONNXRUNTIME_THREADS="1")
    cluster.worker("motion", concurrency=2, pool="threads")
    cluster.worker("face")
    cluster.worker("objects")
    cluster.worker("scene", pool="threads")
    cluster.worker("model")
    cluster.worker("onnx")
    cluster.ingest()
    cluster.wait_live("motion", "face", "objects", "scene", "model", "onnx")
    return cluster


@pytest.fixture(scope="module")
def composer() -> Composer:
    return Composer()


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def send(cluster: Cluster, camera: str, images: list[np.ndarray], capabilities: list[str],
         spacing_s: float = 0.05) -> list[str]:
    """Frames of one camera, a little apart as a real camera sends them."""
    p = producer(cluster.redis)
    ids = []
    for image in images:
        ids.append(p.add(camera, jpeg(image), capabilities=capabilities))
        time.sleep(spacing_s)
    return ids


def by_frame(cluster: Cluster, stream: str) -> dict[str, dict]:
    return {entry["frame_id"]: entry for entry in results(cluster.redis, stream)}


def test_faces_are_found_where_they_were_pasted_and_only_on_moving_frames(running, composer):
    warmup = [composer.empty() for _ in range(5)]
    moving = [composer.with_face(60 + 70 * i, 40 + 20 * i) for i in range(6)]
    send(running, "face-cam", warmup, ["face_detection"])
    ids = send(running, "face-cam", [image for image, _ in moving], ["face_detection"])
    wait_for(lambda: set(by_frame(running, "results:face")) >= set(ids), timeout_s=90, message="face results")
    faces = by_frame(running, "results:face")
    for frame_id, (_, truth) in zip(ids, moving):
        found = faces[frame_id]["result"]["faces"]
        assert found, f"no face found in {frame_id}"
        assert max(iou(face["box"], truth) for face in found) >= 0.5, (found, truth)
    # The still background frames never reached the face detector: motion's gate stayed closed.
    assert len(faces) == len(ids)
    assert int(running.redis.hget(keys.processor_stats("face"), "gated_out")) >= 4


@pytest.mark.parametrize("size", [(640, 360), (1280, 720)])
def test_small_faces_are_found_around_the_motion_that_gated_them(running, size):
    composer = Composer(size)
    camera = f"small-faces-{size[0]}"
    sides = [40, 48, 56, 64, 40, 48]
    moving = [composer.with_face(40 + (size[0] - 200) * i // 6, 30 + (size[1] - 160) * i // 6, side)
              for i, side in enumerate(sides)]
    send(running, camera, [composer.empty() for _ in range(5)], ["face_detection"])
    ids = send(running, camera, [image for image, _ in moving], ["face_detection"])
    wait_for(lambda: set(by_frame(running, "results:face")) >= set(ids), timeout_s=90, message="face results")
    faces = by_frame(running, "results:face")
    for frame_id, (_, truth), side in zip(ids, moving, sides):
        result = faces[frame_id]["result"]
        assert result.get("regions"), f"{frame_id}: motion's boxes did not reach face"  # it looked around the motion
        assert len(result["faces"]) == 1, (side, result)
        assert iou(result["faces"][0]["box"], truth) >= 0.4, (side, result, truth)


def still_then_block(background: np.ndarray, places: list) -> list[np.ndarray]:
    """Five still frames of the background, then one frame per place with a plain grey block there."""
    frames = [background.copy() for _ in range(5)]
    for corner, opposite in places:
        image = background.copy()
        cv2.rectangle(image, corner, opposite, (90, 90, 90), thickness=-1)
        frames.append(image)
    return frames


def test_no_face_on_the_background_even_when_something_moves(running, composer):
    # a plain grey block crossing the coffee table: motion, but no face
    frames = still_then_block(composer.empty(), [((40 + 80 * i, 120), (140 + 80 * i, 240)) for i in range(5)])
    ids = send(running, "empty-cam", frames, ["face_detection"])
    wait_for(lambda: len([f for f in ids[5:] if f in by_frame(running, "results:face")]) >= 4, timeout_s=90,
             message="face ran on the moving frames")
    faces = by_frame(running, "results:face")
    assert all(faces[f]["result"]["faces"] == [] for f in ids if f in faces)


def test_motion_on_moving_frames_and_none_on_a_static_scene(running, composer):
    rng = np.random.default_rng(0)
    static = [np.clip(composer.empty().astype(np.int16) + rng.integers(-3, 4, (360, 640, 3)), 0, 255).astype(np.uint8)
              for _ in range(25)]
    static_ids = send(running, "static-cam", static, ["motion_detection"])
    moving_ids = send(running, "moving-cam", [composer.empty() for _ in range(5)]
                      + [composer.with_face(50 + 80 * i, 60)[0] for i in range(6)], ["motion_detection"])
    wait_for(lambda: set(by_frame(running, "results:motion")) >= set(static_ids + moving_ids), timeout_s=90,
             message="motion results")
    motion = by_frame(running, "results:motion")
    assert not [f for f in static_ids if motion[f]["result"]["motion"]], "motion reported on a static scene"
    assert all(motion[f]["result"]["motion"] and motion[f]["result"]["boxes"] for f in moving_ids[5:])


def test_scene_flags_a_black_and_a_blurred_frame_and_not_the_clean_one(running, composer):
    clean = composer.empty()
    frames = [clean, clean, np.zeros_like(clean), cv2.GaussianBlur(clean, (0, 0), 8), clean]
    ids = send(running, "tamper-cam", frames, ["tamper_detection"], spacing_s=0.15)
    wait_for(lambda: set(by_frame(running, "results:scene")) >= set(ids), timeout_s=60, message="scene results")
    scene = by_frame(running, "results:scene")
    assert scene[ids[2]]["result"]["covered"] and scene[ids[2]]["result"]["tampered"]
    assert scene[ids[3]]["result"]["blurred"] and scene[ids[3]]["result"]["tampered"]
    assert not scene[ids[0]]["result"]["tampered"] and not scene[ids[4]]["result"]["tampered"]


def test_scene_processes_a_batch_of_eight_as_one_batch(running, composer):
    stats = keys.processor_stats("scene")
    before = {k: int(running.redis.hget(stats, k) or 0) for k in ("batches", "batched_frames")}
    image = jpeg(composer.empty())
    ids = producer(running.redis).add_many([("batch-cam", image, {"capabilities": ["tamper_detection"]})] * 8)
    wait_for(lambda: set(by_frame(running, "results:scene")) >= set(ids), timeout_s=60, message="batch results")
    after = {k: int(running.redis.hget(stats, k)) for k in ("batches", "batched_frames")}
    assert (after["batches"] - before["batches"], after["batched_frames"] - before["batched_frames"]) == (1, 8)


def test_a_users_torchscript_model_runs_batched_with_boxes_in_original_pixels(running, composer):
    images = [composer.empty(), cv2.resize(composer.empty(), (1280, 720))]
    ids = send(running, "model-cam", images, ["custom_model"], spacing_s=0)
    wait_for(lambda: set(by_frame(running, "results:model")) >= set(ids), timeout_s=60, message="model results")
    got = by_frame(running, "results:model")
    for frame_id, image in zip(ids, images):
        h, w = image.shape[:2]
        detections = got[frame_id]["result"]["detections"]
        assert len(detections) == 1
        x, y, bw, bh = detections[0]["box"]
        assert abs(x - w * 0.25) <= 2 and abs(y - h * 0.5) <= 2 and abs(bw - w * 0.5) <= 2 and abs(bh - h * 0.5) <= 2


@pytest.fixture(scope="module")
def wide() -> Composer:
    return Composer((1280, 720))


def test_a_person_walking_in_is_found_where_she_is_by_objects_for_person_detection(running, wide):
    warmup = [wide.empty() for _ in range(5)]
    moving = [wide.with_person(360, x, y) for x, y in ((0, 0), (200, 360), (920, 0), (700, 360))]
    send(running, "walk-cam", warmup, ["person_detection"])
    ids = send(running, "walk-cam", [image for image, _ in moving], ["person_detection"])
    wait_for(lambda: set(by_frame(running, "results:objects")) >= set(ids), timeout_s=90, message="objects results")
    found = by_frame(running, "results:objects")
    for frame_id, (_, truth) in zip(ids, moving):
        people = [o for o in found[frame_id]["result"]["objects"] if o["label"] == "person"]
        assert people and max(iou(p["box"], truth) for p in people) >= 0.5, (people, truth)
    # the still frames were gated out by motion: objects ran on the moving ones only
    assert len([f for f in found if f in ids]) == len(ids) and len(found) == len(ids)
    assert int(running.redis.hget(keys.processor_stats("objects"), "gated_out")) >= 4


def test_nothing_living_or_moving_on_the_coffee_table_even_when_something_moves(running, wide):
    # a plain grey block crossing the table: motion, but no person, vehicle or animal
    frames = still_then_block(wide.empty(), [((80 + 240 * i, 240), (280 + 240 * i, 480)) for i in range(4)])
    ids = send(running, "table-cam", frames, ["object_detection"])
    wait_for(lambda: len([f for f in ids[5:] if f in by_frame(running, "results:objects")]) >= 3, timeout_s=90,
             message="objects ran on the moving frames")
    found = by_frame(running, "results:objects")
    for frame_id in ids:
        if frame_id in found:
            assert not [o for o in found[frame_id]["result"]["objects"] if o["label"] in LIVING_OR_MOVING]


def test_a_users_onnx_model_runs_batched_with_boxes_in_original_pixels(running, composer):
    stats = keys.processor_stats("onnx")
    before = {k: int(running.redis.hget(stats, k) or 0) for k in ("batches", "batched_frames")}
    small, large = jpeg(composer.empty()), jpeg(cv2.resize(composer.empty(), (1280, 720)))
    entries = [("onnx-cam", small if i % 2 == 0 else large, {"capabilities": ["onnx_detection"]}) for i in range(8)]
    ids = producer(running.redis).add_many(entries)
    wait_for(lambda: set(by_frame(running, "results:onnx")) >= set(ids), timeout_s=60, message="onnx results")
    got = by_frame(running, "results:onnx")
    # letterboxed into 320x320: 640x360 at 1/2 below 70 grey rows, 1280x720 at 1/4
    expected = {0: [160, 80, 320, 280], 1: [320, 160, 640, 560]}
    for i, frame_id in enumerate(ids):
        assert got[frame_id]["result"] == {
            "objects": [{"label": "car", "score": 0.9, "box": expected[i % 2], "class": 1}], "count": 1}
    after = {k: int(running.redis.hget(stats, k)) for k in ("batches", "batched_frames")}
    assert (after["batches"] - before["batches"], after["batched_frames"] - before["batched_frames"]) == (1, 8)

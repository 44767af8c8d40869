"""`onnx`: tiny ONNX models built here (torch.onnx.export), one per output format, decode to their known boxes.

Each model's boxes are corners in pixels of its 64x64 input; the frames are 640x480, so a YOLO
model's input holds the frame letterboxed (scale 0.1, 8 grey rows above and below) and a
NanoDet model's the frame stretched (0.1 across, 64/480 down). The expected boxes below are
worked out by hand from those numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from detektr.config import ConfigError, load_processor_settings  # noqa: E402
from detektr.workers import onnx as onnx_module  # noqa: E402
from detektr.workers._onnx import OnnxSetupError  # noqa: E402
from detektr.workers.onnx import OnnxSettings, output_format, parse_names, run_onnx, setup_onnx  # noqa: E402

from . import tiny_onnx  # noqa: E402
from .conftest import make_frame  # noqa: E402

FRAME = (640, 480)
BOX_IN_INPUT = (8, 16, 40, 48)
"""A box in the 64x64 input: letterboxed from 640x480 it is (80, 80)-(400, 400) in the frame."""
BOX_IN_FRAME = [80, 80, 320, 320]


def solid(bgr: tuple[int, int, int], size: tuple[int, int] = FRAME) -> np.ndarray:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = bgr
    return image


def set_up(monkeypatch, model, **env):
    """The processor's state from the DETEKTR_ONNX_* variables, as a worker process sets it up."""
    monkeypatch.setenv("DETEKTR_ONNX_MODEL", str(model))
    for name, value in env.items():
        monkeypatch.setenv(f"DETEKTR_ONNX_{name.upper()}", value)
    return setup_onnx(load_processor_settings(OnnxSettings))


def test_declared_batched_and_needing_its_model():
    spec = run_onnx.spec
    assert spec.batch_size == 8 and spec.requires_env == ("DETEKTR_ONNX_MODEL",)
    assert spec.capabilities == ("onnx_detection",) and not spec.requires_packages


@pytest.mark.parametrize("build", [tiny_onnx.yolov8, tiny_onnx.yolov5])
def test_yolo_formats_decode_to_the_known_box_in_frame_pixels(tmp_path, monkeypatch, build):
    model = build(tmp_path / "m.onnx", [(*BOX_IN_INPUT, 1), (0, 0, 0, 0, 2)])  # the second box is empty
    state = set_up(monkeypatch, model)
    assert state.format == build.__name__ and state.size == (64, 64)
    (result,) = run_onnx([make_frame(solid((50, 50, 50)))], state)
    assert result == {"objects": [{"label": "1", "score": 0.9, "box": BOX_IN_FRAME, "class": 1}], "count": 1}
    assert json.loads(json.dumps(result)) == result


def test_nanodet_per_stride_outputs_decode_to_the_known_boxes(tmp_path, monkeypatch):
    # stride 8, cell (3, 4): centre (28, 36); bins (2, 3, 2, 1) x 8 -> (12, 12)-(44, 44) in the input
    # stride 16, cell (2, 1): centre (40, 24); bins (1, 1, 1, 1) x 16 -> (24, 8)-(56, 40)
    model = tiny_onnx.nanodet(tmp_path / "n.onnx", [(8, 3, 4, (2, 3, 2, 1), 2), (16, 2, 1, (1, 1, 1, 1), 0)])
    state = set_up(monkeypatch, model)
    assert state.format == "nanodet"
    (result,) = run_onnx([make_frame(solid((50, 50, 50)))], state)
    # stretched: x / 0.1, y / (64 / 480) = y * 7.5
    assert sorted((o["class"], o["box"]) for o in result["objects"]) == [
        (0, [240, 60, 320, 240]), (2, [120, 90, 320, 240])]


def test_nanodet_plus_single_output_decodes_to_the_known_box(tmp_path, monkeypatch):
    # one output over strides 8, 16, 32, 64; stride 16, cell (2, 1): centre (32, 16) (no half-cell offset);
    # bins (1, 0, 1, 2) x 16 -> (16, 16)-(48, 48) in the input
    model = tiny_onnx.nanodet(tmp_path / "p.onnx", [(16, 2, 1, (1, 0, 1, 2), 1)], plus=True)
    state = set_up(monkeypatch, model)
    assert state.format == "nanodet"
    (result,) = run_onnx([make_frame(solid((50, 50, 50)))], state)
    assert [(o["class"], o["box"]) for o in result["objects"]] == [(1, [160, 120, 320, 240])]


def test_a_dynamic_batch_runs_in_one_call_and_keeps_frame_order(tmp_path, monkeypatch):
    model = tiny_onnx.yolov8(tmp_path / "c.onnx", [(*BOX_IN_INPUT, 0)], colour_scores=True)
    state = set_up(monkeypatch, model, score_min="0.5")
    assert state.batch is None
    calls = []
    real_run = state.model.run
    monkeypatch.setattr(type(state.model), "run", lambda self, batch: calls.append(len(batch)) or real_run(batch))
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 0, 255)]  # BGR: red, green, blue, red
    results = run_onnx([make_frame(solid(c)) for c in colours], state)
    assert calls == [4]
    assert [r["objects"][0]["class"] for r in results] == [0, 1, 2, 0]
    # the frame fills 48 of the 64 rows; the grey border (114) adds its share to every plane
    assert results[0]["objects"][0]["score"] == pytest.approx(0.75 + 0.25 * 114 / 255, abs=1e-3)
    assert all(r["objects"][0]["box"] == BOX_IN_FRAME for r in results)


def test_a_fixed_batch_of_one_runs_frame_by_frame(tmp_path, monkeypatch):
    model = tiny_onnx.yolov5(tmp_path / "f.onnx", [(*BOX_IN_INPUT, 0)], colour_scores=True, dynamic_batch=False)
    state = set_up(monkeypatch, model, score_min="0.5")
    assert state.batch == 1
    results = run_onnx([make_frame(solid(c)) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]], state)
    assert [r["objects"][0]["class"] for r in results] == [2, 0, 1]


def test_a_fixed_batch_of_two_is_padded(tmp_path, monkeypatch):
    model = tiny_onnx.yolov8(tmp_path / "two.onnx", [(*BOX_IN_INPUT, 0)], colour_scores=True, dynamic_batch=False,
                             fixed_batch=2)
    state = set_up(monkeypatch, model, score_min="0.5")
    assert state.batch == 2
    results = run_onnx([make_frame(solid(c)) for c in [(0, 255, 0), (255, 0, 0), (0, 0, 255)]], state)
    assert [r["objects"][0]["class"] for r in results] == [1, 2, 0]


def test_class_names_from_a_file_else_from_the_metadata(tmp_path, monkeypatch):
    model = tiny_onnx.yolov8(tmp_path / "named.onnx", [(*BOX_IN_INPUT, 2)], names="{0: 'cat', 1: 'dog', 2: 'fox'}")
    assert set_up(monkeypatch, model).labels == ("cat", "dog", "fox")
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\n blue \n\n")
    state = set_up(monkeypatch, model, labels=str(labels))
    assert state.labels == ("red", "green", "blue")
    (result,) = run_onnx([make_frame(solid((9, 9, 9)))], state)
    assert result["objects"][0]["label"] == "blue"


def test_parse_names_reads_literals_only():
    assert parse_names("{0: 'person', 2: 'car'}") == ("person", "", "car")
    assert parse_names("['a', 'b']") == ("a", "b")
    assert parse_names("__import__('os').system('true')") == ()
    assert parse_names("not python") == () and parse_names("") == ()


def test_the_format_can_be_forced(tmp_path, monkeypatch):
    model = tiny_onnx.yolov5(tmp_path / "m.onnx", [(*BOX_IN_INPUT, 1)])
    state = set_up(monkeypatch, model, format="yolov8")  # wrong on purpose: [N, 252, 8] read as [4 + C, A]
    assert state.format == "yolov8"
    assert run_onnx([make_frame(solid((0, 0, 0)))], state)[0]["objects"] != [
        {"label": "1", "score": 0.9, "box": BOX_IN_FRAME, "class": 1}]


def test_output_format_from_shapes():
    assert output_format([(1, 84, 8400)], (640, 640)) == "yolov8"
    assert output_format([(1, 25200, 85)], (640, 640)) == "yolov5"
    assert output_format([(1, 2125, 112)], (320, 320)) == "nanodet"  # NanoDet-Plus-m 320
    assert output_format([(1, 2704, 80), (1, 2704, 44)], (416, 416)) == "nanodet"
    with pytest.raises(OnnxSetupError):
        output_format([(1, 8400)], (640, 640))


def test_a_model_that_is_missing_or_broken_fails_setup_with_the_reason(tmp_path, monkeypatch):
    with pytest.raises(OnnxSetupError, match="is not a file"):
        set_up(monkeypatch, tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(OnnxSetupError, match="does not load"):
        set_up(monkeypatch, broken)
    monkeypatch.delenv("DETEKTR_ONNX_MODEL")
    with pytest.raises(OnnxSetupError, match="DETEKTR_ONNX_MODEL is not set"):
        setup_onnx(OnnxSettings())


def test_a_model_whose_outputs_fit_no_format_fails_setup(tmp_path, monkeypatch):
    class Flat(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    path = tiny_onnx.export(Flat(), tmp_path / "flat.onnx", (32, 32), 1, True)
    with pytest.raises(OnnxSetupError, match="none of the formats"):
        set_up(monkeypatch, path)


def test_settings_are_checked(monkeypatch):
    monkeypatch.setenv("DETEKTR_ONNX_FORMAT", "yolov9")
    with pytest.raises(ConfigError, match="DETEKTR_ONNX_FORMAT"):
        load_processor_settings(OnnxSettings)
    monkeypatch.setenv("DETEKTR_ONNX_FORMAT", "auto")
    monkeypatch.setenv("DETEKTR_ONNX_INPUT", "320x192")
    assert load_processor_settings(OnnxSettings).input == (320, 192)


def test_importing_does_not_need_onnxruntime_or_a_model():
    assert "onnxruntime" not in vars(onnx_module)

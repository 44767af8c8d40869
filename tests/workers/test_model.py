"""`model`: a tiny TorchScript model built here runs through the contract; boxes come back in frame pixels.

The tiny model puts one box at fixed fractions of its input, (W/4, H/2) to (3W/4, H); its score is
the input's mean (0..1) and its class the index of the brightest RGB channel; a second row of
zeros is padding. So each frame's expected answer follows from the frame alone.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

from detektr.config import load_processor_settings  # noqa: E402
from detektr.workers import model as model_module  # noqa: E402
from detektr.workers.model import ModelContractError, ModelSettings, run_model, setup_model  # noqa: E402

from .conftest import make_frame  # noqa: E402


def set_up():
    """The model's state from the DETEKTR_MODEL_* variables, as a worker process sets it up."""
    return setup_model(load_processor_settings(ModelSettings))


class Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        means = x.mean(dim=(2, 3))
        score = means.mean(dim=1, keepdim=True)
        cls = means.argmax(dim=1, keepdim=True).to(x.dtype)
        box = torch.tensor([w * 0.25, h * 0.5, w * 0.75, h * 1.0], device=x.device).expand(n, 4)
        detection = torch.cat([box, score, cls], dim=1)
        return torch.stack([detection, torch.zeros_like(detection)], dim=1)


class WrongShape(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class NeedsGrey(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], 1, x.shape[2] * x.shape[3], 1).expand(-1, -1, -1, 6)


@pytest.fixture
def model_path(tmp_path, monkeypatch):
    path = tmp_path / "tiny.pt"
    torch.jit.script(Tiny()).save(str(path))
    monkeypatch.setenv("DETEKTR_MODEL_PATH", str(path))
    monkeypatch.setenv("DETEKTR_MODEL_INPUT", "160x120")
    return path


def solid(width, height, bgr):
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = bgr
    return image


def expected_box(width, height):
    return [round(width / 4), round(height / 2), round(3 * width / 4) - round(width / 4), height - round(height / 2)]


def test_importing_does_not_need_a_model():
    assert "detektr.workers.model" in sys.modules and run_model.spec.batch_size == 8
    assert run_model.spec.capabilities == ("custom_model",)


def test_the_device_can_be_chosen(model_path, monkeypatch):
    monkeypatch.setenv("DETEKTR_MODEL_DEVICE", "cpu")
    state = set_up()
    assert state.device.type == "cpu"
    assert run_model([make_frame(solid(64, 48, (90, 90, 90)))], state)[0]["count"] == 1


def test_setup_without_a_path_fails_clearly(monkeypatch):
    monkeypatch.delenv("DETEKTR_MODEL_PATH", raising=False)
    with pytest.raises(ModelContractError, match="DETEKTR_MODEL_PATH is not set"):
        set_up()


def test_setup_rejects_missing_files_and_broken_models(tmp_path, monkeypatch):
    monkeypatch.setenv("DETEKTR_MODEL_PATH", str(tmp_path / "nope.pt"))
    with pytest.raises(ModelContractError, match="is not a file"):
        set_up()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    monkeypatch.setenv("DETEKTR_MODEL_PATH", str(junk))
    with pytest.raises(ModelContractError, match="not a TorchScript model"):
        set_up()
    wrong = tmp_path / "wrong.pt"
    torch.jit.script(WrongShape()).save(str(wrong))
    monkeypatch.setenv("DETEKTR_MODEL_PATH", str(wrong))
    with pytest.raises(ModelContractError, match=r"shape \[1, 3\], not \[1, K, 6\]"):
        set_up()
    crashing = tmp_path / "crashing.pt"
    torch.jit.script(NeedsGrey()).save(str(crashing))
    monkeypatch.setenv("DETEKTR_MODEL_PATH", str(crashing))
    with pytest.raises(ModelContractError, match=r"fails on a \[1, 3, 320, 320\] input"):
        set_up()


def test_boxes_come_back_in_original_pixels(model_path):
    state = set_up()
    assert state.settings.input == (160, 120)
    assert state.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = [(640, 360), (1280, 720), (300, 500), (161, 121)]
    results = run_model([make_frame(solid(w, h, (200, 200, 200))) for w, h in sizes], state)
    for (w, h), result in zip(sizes, results):
        assert result["count"] == 1, result  # the zero padding row is dropped
        assert result["detections"][0]["box"] == expected_box(w, h)
        assert result["detections"][0]["score"] == pytest.approx(200 / 255, abs=1e-3)
        assert json.loads(json.dumps(result)) == result


def test_a_batch_of_8_keeps_its_order_and_channels_are_rgb(model_path, monkeypatch):
    monkeypatch.setenv("DETEKTR_MODEL_LABELS", "red, green, blue")
    state = set_up()
    colours = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}  # BGR frames
    order = ["blue", "red", "green", "green", "red", "blue", "red", "green"]
    results = run_model(
        [make_frame(solid(320, 240, colours[name]), frame_id=str(i)) for i, name in enumerate(order)], state
    )
    assert [r["detections"][0]["label"] for r in results] == order
    assert [r["detections"][0]["class"] for r in results] == [["red", "green", "blue"].index(n) for n in order]


def test_score_threshold(model_path, monkeypatch):
    dim, bright = make_frame(solid(320, 240, (40, 40, 40))), make_frame(solid(320, 240, (120, 120, 120)))
    monkeypatch.setenv("DETEKTR_MODEL_SCORE_MIN", "0.3")  # 40/255 = 0.16 and 120/255 = 0.47
    low, high = run_model([dim, bright], set_up())
    assert low == {"detections": [], "count": 0} and high["count"] == 1


def test_batched_equals_one_at_a_time(model_path, composer):
    state = set_up()
    frames = [make_frame(composer.with_face(60 * i, 20 * i)[0]) for i in range(8)]
    assert run_model(frames, state) == [run_model([frame], state)[0] for frame in frames]


def test_unusable_frames_are_rejected_alone(model_path):
    from detektr import FrameRejected

    state = set_up()
    good, bad = run_model([make_frame(solid(64, 64, (90, 90, 90))), make_frame(np.zeros((4, 4), np.float64))], state)
    assert good["count"] == 1 and isinstance(bad, FrameRejected)
    assert model_module.check_output(torch.zeros(2, 0, 6), 2).shape == (2, 0, 6)

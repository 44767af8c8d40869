"""The shipped processors' settings: one described, bounded model each, declared on the spec, documented."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from pydantic import ValidationError

from detektr import ProcessorSettings
from detektr.config import ConfigError, load_processor_settings, settings_variables
from detektr.discovery import import_processors
from detektr.processor import declared_processors
from detektr.workers._common import TorchSettings
from detektr.workers._onnx import OnnxRuntimeSettings
from detektr.workers.model import ModelSettings
from detektr.workers.motion import MotionSettings

from .conftest import REPO_ROOT

PROCESSORS_DOC = REPO_ROOT / "docs" / "processors.md"
WITH_SETTINGS = {"motion", "face", "objects", "scene", "model", "onnx"}
"""The shipped processors that have settings of their own."""


def shipped_specs():
    modules = set(import_processors())
    return {name: spec for name, spec in declared_processors().items() if spec.fn.__module__ in modules}


def settings_models_in(module_name: str) -> list[type[ProcessorSettings]]:
    """The ProcessorSettings models a module defines itself (not those it imports)."""
    module = importlib.import_module(module_name)
    return [
        value for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, ProcessorSettings) and value is not ProcessorSettings
        and value.__module__ == module_name
    ]


def all_models() -> list[type[ProcessorSettings]]:
    return [spec.settings for spec in shipped_specs().values() if spec.settings is not None] + [TorchSettings,
                                                                                           OnnxRuntimeSettings]


def variables(model: type[ProcessorSettings]) -> dict[str, str]:
    return settings_variables(model, str(model.model_config.get("env_prefix", "")), "_")


def test_every_shipped_processor_with_settings_declares_them_and_its_setup_takes_them():
    specs = shipped_specs()
    assert WITH_SETTINGS <= set(specs)
    for name, spec in specs.items():
        defined = settings_models_in(spec.fn.__module__)
        assert defined == ([spec.settings] if spec.settings else []), f"{name}: settings defined but not declared"
        if spec.settings is not None and spec.setup is not None:
            assert len(inspect.signature(spec.setup).parameters) == 1, f"{name}: setup must take the settings"
    assert {name for name, spec in specs.items() if spec.settings is not None} == WITH_SETTINGS
    assert specs["sample"].settings is None


def test_torch_processors_require_torch():
    specs = shipped_specs()
    assert specs["scene"].requires_packages == ("torch",) and specs["model"].requires_packages == ("torch",)
    assert specs["model"].requires_env == ("DETEKTR_MODEL_PATH",)
    assert specs["onnx"].requires_env == ("DETEKTR_ONNX_MODEL",)
    # onnxruntime is a dependency of detektr itself: the ONNX processors need no extra package
    assert all(not specs[name].requires_packages for name in ("motion", "face", "objects", "onnx", "sample"))


def test_every_field_is_described_and_documented():
    doc = PROCESSORS_DOC.read_text()
    for model in all_models():
        for field, info in model.model_fields.items():
            assert info.description and info.description.strip(), f"{model.__name__}.{field} has no description"
        for variable in variables(model):
            assert f"`{variable}`" in doc, f"{variable} is not in {Path(PROCESSORS_DOC).name}"


def test_each_model_has_its_own_prefix_and_stays_strict():
    prefixes = [model.model_config.get("env_prefix") for model in all_models()]
    assert all(prefix and prefix.startswith("DETEKTR_") and prefix.endswith("_") for prefix in prefixes)
    assert len(set(prefixes)) == len(prefixes)
    for model in all_models():
        assert model.model_config["extra"] == "forbid" and model.model_config["frozen"] is True
        settings = model()
        with pytest.raises(ValidationError):
            model(not_a_field=1)
        with pytest.raises(ValidationError):
            setattr(settings, next(iter(model.model_fields)), 1)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DETEKTR_FACE_MIN_FACE_PX", "-1", "greater than or equal to 0"),
        ("DETEKTR_FACE_MODEL", "haar", "'full' or 'short'"),
        ("DETEKTR_FACE_SCORE_MIN", "1.5", "less than or equal to 1"),
        ("DETEKTR_MOTION_WIDTH", "lots", "valid integer"),
        ("DETEKTR_MOTION_LEARNING_RATE", "2", "less than or equal to 1"),
        ("DETEKTR_OBJECTS_SCORE_MIN", "2", "less than or equal to 1"),
        ("DETEKTR_OBJECTS_NMS_IOU", "-0.1", "greater than or equal to 0"),
        ("DETEKTR_ONNX_MAX_DETECTIONS", "0", "greater than or equal to 1"),
        ("DETEKTR_ONNX_INPUT", "4x4", "sides from 8 to 8192"),
        ("DETEKTR_ONNXRUNTIME_THREADS", "-1", "greater than or equal to 0"),
        ("DETEKTR_SCENE_DARK_MAX", "300", "less than or equal to 255"),
        ("DETEKTR_SCENE_REBASE_FRAMES", "0", "greater than or equal to 1"),
        ("DETEKTR_MODEL_MAX_DETECTIONS", "0", "greater than or equal to 1"),
        ("DETEKTR_MODEL_INPUT", "wide", "WIDTHxHEIGHT"),
        ("DETEKTR_MODEL_INPUT", "4x4", "sides from 8 to 8192"),
        ("DETEKTR_MODEL_INPUT", "640x384x3", "WIDTHxHEIGHT"),
        ("DETEKTR_TORCH_THREADS", "2000", "less than or equal to 1024"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_not_the_value(monkeypatch, variable, value, message):
    model = next(m for m in all_models() if variable in variables(m))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        load_processor_settings(model)
    assert str(refused.value).startswith(f"{variable}: ") and message in str(refused.value)
    assert value not in str(refused.value)
    with pytest.raises(ValidationError):
        model()


def test_empty_variables_count_as_unset(monkeypatch):
    monkeypatch.setenv("DETEKTR_MOTION_WIDTH", "")
    monkeypatch.setenv("DETEKTR_MODEL_INPUT", "")
    monkeypatch.setenv("DETEKTR_MODEL_PATH", "")
    assert MotionSettings().width == 320
    assert ModelSettings().input == (320, 320) and ModelSettings().path is None


@pytest.mark.parametrize(
    ("value", "size"), [("640x384", (640, 384)), ("320", (320, 320)), (" 160X120 ", (160, 120)), ("8x8192", (8, 8192))]
)
def test_model_input_is_width_x_height_or_one_number(monkeypatch, value, size):
    monkeypatch.setenv("DETEKTR_MODEL_INPUT", value)
    assert load_processor_settings(ModelSettings).input == size
    assert ModelSettings(input=size).input == size


def test_model_labels_are_comma_separated_in_class_order(monkeypatch):
    monkeypatch.setenv("DETEKTR_MODEL_LABELS", "person, car,,dog")
    monkeypatch.setenv("DETEKTR_MODEL_PATH", "~/models/detector.pt")
    monkeypatch.setenv("DETEKTR_MODEL_DEVICE", "cpu")
    settings = load_processor_settings(ModelSettings)
    assert settings.labels == ("person", "car", "", "dog")  # the third class has no name
    assert settings.path == Path("~/models/detector.pt").expanduser() and settings.device == "cpu"
    monkeypatch.delenv("DETEKTR_MODEL_LABELS")
    assert load_processor_settings(ModelSettings).labels == ()

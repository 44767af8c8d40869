"""The @processor decorator: options, validation, registration."""

from __future__ import annotations

import numpy as np
import pytest

from detektr import Frame, processor
from detektr.errors import ProcessorDefinitionError
from detektr.processor import REGISTRY, build_spec


def fn(frame):
    """Do nothing useful."""
    return {}


def test_defaults_follow_the_name():
    spec = build_spec("thing", fn, {})
    assert spec.capabilities == ("thing",) and spec.queue == "thing" and spec.result_stream == "results:thing"
    assert spec.capacity == 1 and spec.routing is None and spec.description == "Do nothing useful."
    assert spec.task_name == "detektr.process.thing"


def test_unknown_options_are_rejected_with_a_suggestion():
    with pytest.raises(ProcessorDefinitionError, match="did you mean 'capabilities'"):
        build_spec("thing", fn, {"capabilites": ["x"]})


@pytest.mark.parametrize("name,options", [
    ("Bad Name", {}),
    ("ok", {"capacity": 0}),
    ("ok", {"capacity": True}),
    ("ok", {"routing": "random"}),
    ("ok", {"capabilities": "face"}),
    ("ok", {"setup": 3}),
    ("ok", {"max_retries": -1}),
    ("ok", {"batch_size": 0}),
    ("ok", {"gated_by": "ok"}),
    ("ok", {"requires_env": "MODEL_PATH"}),
    ("ok", {"requires_env": [""]}),
])
def test_bad_options_are_rejected(name, options):
    with pytest.raises(ProcessorDefinitionError):
        build_spec(name, fn, options)


def test_missing_env_names_the_required_variables_that_are_unset_or_blank():
    spec = build_spec("needs", fn, {"requires_env": ["A", "B", "C"]})
    assert spec.missing_env({"A": "x", "B": "  "}) == ["B", "C"]
    assert spec.missing_env({"A": "x", "B": "y", "C": "z"}) == []
    assert build_spec("free", fn, {}).missing_env({}) == []


def test_decorated_function_still_calls_the_plain_function_and_registers_a_celery_task():
    @processor("unit-double", capabilities=["double"], capacity=3, result_stream="double:out")
    def double(frame: Frame) -> dict:
        return {"w": frame.width * 2}

    frame = Frame(image=np.zeros((4, 5, 3), np.uint8), frame_id="f", camera_id="c", timestamp=0.0)
    assert double(frame) == {"w": 10}
    assert REGISTRY["unit-double"] is double
    assert double.task.name == "detektr.process.unit-double"
    assert double.spec.advertised()["result_stream"] == "double:out"


def test_a_second_processor_with_the_same_name_is_refused():
    @processor("unit-once")
    def first(frame):
        return {}

    def other(frame):
        return {}

    with pytest.raises(ProcessorDefinitionError, match="declared twice"):
        processor("unit-once")(other)


def test_a_missing_package_is_named_with_how_to_install_it_and_comes_before_a_missing_setting():
    spec = build_spec("heavy", fn, {"requires_packages": ["json", "detektr_absent_pkg"], "requires_env": ["X_TOKEN"]})
    assert spec.missing_packages() == ["detektr_absent_pkg"]
    assert spec.cannot_run_because({}) == "needs the package detektr_absent_pkg (pip install detektr_absent_pkg)"
    light = build_spec("light", fn, {"requires_env": ["X_TOKEN"]})
    assert light.cannot_run_because({}) == "needs X_TOKEN to be set"
    assert light.cannot_run_because({"X_TOKEN": "t"}) == ""


def test_settings_must_be_a_processor_settings_model_and_make_the_function_take_them():
    from pydantic import BaseModel

    from detektr import ProcessorSettings

    class Tuning(ProcessorSettings):
        level: int = 3

    with pytest.raises(ProcessorDefinitionError, match="subclass of ProcessorSettings"):
        build_spec("tuned", fn, {"settings": BaseModel})
    spec = build_spec("tuned", lambda frame, settings: settings.level, {"settings": Tuning})
    assert spec.stateful and spec.call("frame", Tuning()) == 3
    assert not build_spec("plain", fn, {}).stateful


def test_declaring_a_processor_binds_no_celery_task_until_one_is_asked_for():
    import sys

    @processor("unit-lazy")
    def lazy(frame):
        return {}

    assert "detektr.celery_app" not in sys.modules or "detektr.process.unit-lazy" not in sys.modules[
        "detektr.celery_app"].app.tasks
    assert lazy.task.name == "detektr.process.unit-lazy"

"""What a worker serves, decided from its queues and the declared processors (no I/O)."""

from __future__ import annotations

from detektr.processor import build_spec
from detektr.serving import is_default_node_name, name_taken_by, plan_serving, unique_node_name


def fn(frame):
    return {}


SPECS = [build_spec("face", fn, {}), build_spec("needy", fn, {"requires_env": ["TOKEN"]}),
         build_spec("twin", fn, {"queue": "face"}), build_spec("heavy", fn, {"requires_packages": ["no_such_pkg_x"]})]


def test_a_worker_serves_the_processors_of_its_queues_that_can_run_here():
    plan = plan_serving(["face"], SPECS, {})
    assert [s.name for s in plan.serve] == ["face", "twin"] and plan.problem() == ""


def test_a_processor_that_cannot_run_is_refused_and_its_queue_left_unless_shared():
    plan = plan_serving(["face", "needy"], SPECS, {})
    assert plan.refused == {"needy": "needs TOKEN to be set"} and plan.queues_to_leave == ["needy"]
    assert plan.problem() == ""
    assert plan_serving(["needy"], SPECS, {"TOKEN": "x"}).refused == {}


def test_nothing_to_serve_and_unknown_queues_are_problems_that_say_what_exists():
    assert plan_serving(["heavy"], SPECS, {}).problem() == (
        "nothing to serve: processor heavy needs the package no_such_pkg_x (pip install no_such_pkg_x)")
    problem = plan_serving(["face", "nope"], SPECS, {}).problem()
    assert problem.startswith("no processor uses the queue nope (processor queues: face, heavy, needy")
    assert "celery" in plan_serving(["celery"], SPECS, {}).problem()


def test_the_maintenance_queue_needs_no_processor():
    plan = plan_serving(["maintenance"], SPECS, {})
    assert plan.serve == () and plan.maintenance and plan.problem() == ""


def test_default_names_become_unique_per_process():
    assert is_default_node_name("celery@box", host="box") and not is_default_node_name("face@box", host="box")
    assert unique_node_name(["motion", "face"], 42, host="box") == "face+motion-42@box"


def test_a_live_name_belongs_to_another_worker_unless_it_is_us_restarted_or_dead_here():
    assert name_taken_by(None, "box", 1, False) == ""
    assert name_taken_by({"machine": "box", "pid": 1}, "box", 1, True) == ""  # a container's pid 1, restarted
    assert name_taken_by({"machine": "box", "pid": 7}, "box", 1, False) == ""  # died, not expired yet
    assert name_taken_by({"machine": "box", "pid": 7}, "box", 1, True) == "pid 7 on box"
    assert name_taken_by({"machine": "other", "pid": 1}, "box", 1, False) == "pid 1 on other"

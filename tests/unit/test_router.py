"""The routing decision, as plain code: strategies, fairness, stickiness, fan-out."""

from __future__ import annotations

from collections import Counter

import pytest

from detektr.router import Router, RoutingTable, celery_priority, keep_holding, plan_gates, task_sizes


def table(procs, depths=None, default="least_loaded"):
    return RoutingTable.build(procs, depths or {}, default)


def test_least_loaded_prefers_lower_depth_relative_to_capacity():
    t = table([("a", ["cap"], 1, None), ("b", ["cap"], 4, None)], {"a": 2, "b": 4})
    assert Router().route(t, "cam", ["cap"]).processors == ("b",)  # 4/4 = 1.0 < 2/1 = 2.0


def test_equally_loaded_processors_share_work_evenly():
    t = table([(n, ["cap"], 2, None) for n in ("a", "b", "c")])
    router = Router()
    picks = Counter(router.route(t, f"cam{i % 2}", ["cap"]).processors[0] for i in range(300))
    assert picks == {"a": 100, "b": 100, "c": 100}


def test_ties_are_not_always_won_by_the_same_processor_even_without_depth_changes():
    router = Router()
    picks = Counter()
    for _ in range(30):  # a fresh snapshot each time: all depths equal
        t = table([(n, ["cap"], 1, None) for n in ("a", "b", "c")])
        picks[router.route(t, "cam", ["cap"]).processors[0]] += 1
    assert picks == {"a": 10, "b": 10, "c": 10}


def test_round_robin_takes_candidates_in_turn():
    t = table([(n, ["cap"], 1, None) for n in ("a", "b")], {"a": 100}, default="round_robin")
    router = Router()
    assert [router.route(t, "cam", ["cap"]).processors[0] for _ in range(4)] == ["a", "b", "a", "b"]


def test_affinity_sticks_a_camera_to_one_processor_and_moves_only_the_lost_processors_cameras():
    names = [f"p{i}" for i in range(5)]
    router = Router()
    t = table([(n, ["cap"], 1, "affinity") for n in names])
    before = {f"cam{i}": router.route(t, f"cam{i}", ["cap"]).processors[0] for i in range(200)}
    again = {cam: router.route(t, cam, ["cap"]).processors[0] for cam in before}
    assert again == before
    assert len(set(before.values())) == 5
    t2 = table([(n, ["cap"], 1, "affinity") for n in names if n != "p2"])
    after = {cam: router.route(t2, cam, ["cap"]).processors[0] for cam in before}
    moved = {cam for cam in before if before[cam] != after[cam]}
    assert moved == {cam for cam, p in before.items() if p == "p2"}


def test_processor_declared_strategy_overrides_the_default():
    t = table([("a", ["cap"], 1, "round_robin"), ("b", ["cap"], 1, "round_robin")], {"a": 100})
    assert t.strategy["cap"] == "round_robin"
    mixed = table([("a", ["cap"], 1, "round_robin"), ("b", ["cap"], 1, "affinity")])
    assert mixed.strategy["cap"] == "least_loaded"


def test_one_task_per_processor_even_when_it_offers_several_requested_capabilities():
    t = table([("both", ["x", "y"], 1, None)])
    assert Router().route(t, "cam", ["x", "y"]).processors == ("both",)


def test_absent_capabilities_mean_every_live_capability():
    t = table([("a", ["x"], 1, None), ("b", ["y"], 1, None)])
    assert sorted(Router().route(t, "cam", None).processors) == ["a", "b"]


def test_unavailable_capabilities_are_reported():
    t = table([("a", ["x"], 1, None)])
    decision = Router().route(t, "cam", ["x", "nope"])
    assert decision.processors == ("a",) and decision.unavailable == ("nope",)


def test_processors_without_capacity_are_not_candidates():
    t = table([("a", ["x"], 0, None)])
    assert Router().route(t, "cam", ["x"]).unavailable == ("x",)


def test_unknown_default_strategy_is_refused():
    with pytest.raises(ValueError):
        table([("a", ["x"], 1, None)], default="random")


def test_frame_priority_maps_to_celery_priority_with_most_urgent_first():
    assert celery_priority(9) == 0 and celery_priority(0) == 9 and celery_priority(42) == 0


def test_gated_processors_ride_on_their_gating_processors_task():
    plan, ungated = plan_gates(["face", "people", "sample"], {"face": "motion", "people": "motion"},
                               live=["face", "people", "sample", "motion"])
    assert plan == {"sample": (), "motion": ("face", "people")} and ungated == ()


def test_a_frame_that_asked_for_the_gating_processor_too_gets_one_task_for_it():
    plan, _ = plan_gates(["motion", "face"], {"face": "motion"}, live=["motion", "face"])
    assert plan == {"motion": ("face",)}


def test_a_gated_processor_runs_ungated_when_its_gating_processor_is_not_live():
    plan, ungated = plan_gates(["face"], {"face": "motion"}, live=["face"])
    assert plan == {"face": ()} and ungated == ("face",)


def test_pick_worker_is_sticky_and_moves_only_the_lost_workers_cameras():
    router = Router()
    workers = [(f"w{i}", f"q:w{i}") for i in range(4)]
    before = {f"cam{i}": router.pick_worker(f"cam{i}", workers) for i in range(100)}
    after = {cam: router.pick_worker(cam, workers[1:]) for cam in before}
    assert {cam for cam in before if before[cam] != after[cam]} == {c for c, q in before.items() if q == "q:w0"}


@pytest.mark.parametrize(
    ("frames", "capacity", "most", "expected"),
    [
        (1, 4, 16, [1]),  # a live camera's single frame: a task of its own, no waiting for company
        (3, 8, 16, [1, 1, 1]),  # fewer frames than worker processes: one each
        (64, 1, 16, [16, 16, 16, 16]),  # a backlog on one process: full tasks
        (10, 4, 16, [3, 3, 2, 2]),  # every process gets work, sizes differ by one at most
        (100, 1, 16, [15, 15, 14, 14, 14, 14, 14]),
        (40, 2, 1, [1] * 40),  # frames_per_task = 1: one frame per task, as without sharing
        (0, 4, 16, []),
    ],
)
def test_task_sizes_share_a_backlog_without_starving_any_worker_process(frames, capacity, most, expected):
    assert task_sizes(frames, capacity, most) == expected


@pytest.mark.parametrize(
    ("frames", "capacity", "most", "expected"),
    [
        (3, 2, 128, [2, 1]),  # a live camera's few frames: as without `finer`
        (30, 2, 128, [15, 15]),  # too few to split further (16 frames at least)
        (100, 2, 128, [17, 17, 17, 17, 16, 16]),  # the end of a backlog: whoever is free takes the next part
        (250, 2, 128, [32, 32, 31, 31, 31, 31, 31, 31]),  # at most 4 tasks per process
        (250, 2, 16, [16] * 10 + [15] * 6),  # never more than `most` in one
    ],
)
def test_frames_leaving_before_a_full_hold_are_split_finer(frames, capacity, most, expected):
    assert task_sizes(frames, capacity, most, finer=True) == expected


def test_task_sizes_always_account_for_every_frame_within_the_limits():
    for frames in range(0, 300, 7):
        for capacity in (1, 2, 5, 64):
            for most in (1, 3, 16, 128):
                for finer in (False, True):
                    sizes = task_sizes(frames, capacity, most, finer)
                    assert sum(sizes) == frames
                    assert all(1 <= size <= most for size in sizes)
                    assert len(sizes) >= min(frames, capacity)
                    assert not sizes or max(sizes) - min(sizes) <= 1
                    assert len(sizes) >= len(task_sizes(frames, capacity, most))


@pytest.mark.parametrize(
    ("waiting", "capacity", "held", "most", "held_for", "hold"),
    [
        (2, 2, 10, 64, 0.01, True),  # every process has a task waiting: the frames would wait anyway
        (1, 2, 10, 64, 0.01, False),  # a process is about to run dry: send now
        (0, 1, 1, 64, 0.0, False),  # an idle queue never waits (a live camera's frame goes at once)
        (5, 1, 64, 64, 0.01, False),  # a full task per process: send it
        (5, 2, 127, 64, 0.01, True),
        (5, 1, 10, 64, 0.1, False),  # held for the longest allowed
    ],
)
def test_ingest_holds_frames_only_while_they_would_wait_in_the_queue_anyway(waiting, capacity, held, most, held_for,
                                                                              hold):
    assert keep_holding(waiting, capacity, held, most, held_for, max_hold_s=0.1) is hold


def test_holding_can_be_switched_off():
    assert keep_holding(100, 1, 1, 64, 0.0, max_hold_s=0) is False


def live(name, capabilities, capacity=1, routing=None, gated_by=None, own_queues=()):
    from detektr.registry import LiveProcessor

    return LiveProcessor(name=name, capabilities=tuple(capabilities), capacity=capacity, queue=name,
                         result_stream=f"results:{name}", routing=routing, own_queues=tuple(own_queues),
                         gated_by=gated_by)


def test_the_plan_names_every_task_with_its_queue_and_the_processors_after_its_gate():
    from detektr.router import Destination

    procs = {p.name: p for p in [
        live("motion", ["motion_detection"], routing="affinity", own_queues=[("w1", "motion:w1"), ("w2", "motion:w2")]),
        live("face", ["face_detection"], gated_by="motion"),
        live("sample", ["sample_processing"]),
    ]}
    table = RoutingTable.from_live(procs, {}, "least_loaded")
    plan = Router().plan(table, "cam1", ["face_detection", "sample_processing"])
    motion_queue = Router().pick_worker("cam1", [("w1", "motion:w1"), ("w2", "motion:w2")])
    assert set(plan.destinations) == {Destination("motion", motion_queue, (("face", "face"),)),
                                      Destination("sample", "sample")}
    assert plan.unavailable == () and plan.ungated == ()


def test_the_plan_applies_gate_overrides_and_runs_a_gated_processor_directly_without_its_gate():
    procs = {p.name: p for p in [live("face", ["face_detection"], gated_by="motion"), live("motion", ["motion"])]}
    off = RoutingTable.from_live(procs, {}, "least_loaded", {"face": "none"})
    assert [d.processor for d in Router().plan(off, "cam", ["face_detection"]).destinations] == ["face"]
    alone = RoutingTable.from_live({"face": procs["face"]}, {}, "least_loaded")
    plan = Router().plan(alone, "cam", ["face_detection", "cars"])
    assert plan.ungated == ("face",) and plan.unavailable == ("cars",)

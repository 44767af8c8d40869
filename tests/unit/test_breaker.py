"""The circuit breaker's decision, as plain code: closed, open, half-open and back."""

from __future__ import annotations

from detektr.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, next_breaker
from detektr.config import BreakerSettings
from detektr.registry import LiveProcessor
from detektr.router import Router, RoutingTable

SETTINGS = BreakerSettings(failure_threshold=5, recovery_s=30, success_threshold=3)


def test_failures_without_a_success_open_it_and_a_success_starts_the_count_again():
    b = next_breaker(Breaker(), failed=4, processed=0, now=1, settings=SETTINGS)
    assert b.state == CLOSED
    b = next_breaker(b, failed=5, processed=0, now=2, settings=SETTINGS)
    assert b.state == OPEN and b.since == 2 and "5 attempts failed" in b.reason
    mixed = next_breaker(Breaker(), failed=4, processed=0, now=1, settings=SETTINGS)
    mixed = next_breaker(mixed, failed=8, processed=1, now=2, settings=SETTINGS)  # a success in between
    assert mixed.state == CLOSED and (mixed.failed_seen, mixed.processed_seen) == (8, 1)
    assert next_breaker(mixed, failed=12, processed=1, now=3, settings=SETTINGS).state == CLOSED  # 4 since
    assert next_breaker(mixed, failed=13, processed=1, now=3, settings=SETTINGS).state == OPEN


def test_it_stays_open_for_the_recovery_time_then_lets_frames_through_on_trial():
    opened = Breaker(OPEN, 100, 5, 0, "5 attempts failed without a success")
    assert next_breaker(opened, 9, 0, 129, SETTINGS) == opened
    trial = next_breaker(opened, 9, 0, 130, SETTINGS)
    assert trial.state == HALF_OPEN and (trial.failed_seen, trial.processed_seen) == (9, 0)
    assert next_breaker(trial, 9, 2, 131, SETTINGS).state == HALF_OPEN
    assert next_breaker(trial, 9, 3, 131, SETTINGS).state == CLOSED
    again = next_breaker(trial, 10, 1, 131, SETTINGS)
    assert again.state == OPEN and again.since == 131 and "on trial" in again.reason


def test_counters_that_went_back_start_the_count_again():
    b = Breaker(CLOSED, 0, 50, 50)
    assert next_breaker(b, 0, 0, 1, SETTINGS) == Breaker(CLOSED, 0, 0, 0)


def live(name: str, capabilities: list[str]) -> LiveProcessor:
    return LiveProcessor(name=name, capabilities=tuple(capabilities), capacity=1, queue=name,
                         result_stream=f"results:{name}")


def test_routing_leaves_an_open_processor_out_and_says_why_when_nothing_else_offers_it():
    procs = {"face": live("face", ["faces"]), "face2": live("face2", ["faces"]), "lpr": live("lpr", ["plates"])}
    table = RoutingTable.from_live(procs, {}, "least_loaded", open_breakers={"face": "5 attempts failed"})
    picks = {Router().plan(table, f"cam{i}", ["faces"]).destinations[0].processor for i in range(20)}
    assert picks == {"face2"}
    alone = RoutingTable.from_live(procs, {}, "least_loaded", open_breakers={"lpr": "5 attempts failed"})
    plan = Router().plan(alone, "cam", ["plates"])
    assert plan.destinations == () and plan.unavailable == ("plates",)
    assert alone.why_unavailable(plan.unavailable).startswith(
        "circuit open for lpr, the processor of plates (5 attempts failed)")
    assert "no live processor offers cars" in alone.why_unavailable(["cars"])

"""The metric catalogue, the rates computed from counter samples, and the families built from plain data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detektr import stats
from detektr.cluster_metrics import (
    ClusterSnapshot,
    Sample,
    backpressure_number,
    camera_counts,
    camera_rates,
    cluster_families,
    counter_rate,
    inference_speed_ms,
    window_ends,
)
from detektr.metrics import CATALOGUE, InferenceTimer, declared_sample, histogram, process_registry, state_label
from detektr.metrics_server import use_multiprocess_dir

REPO = Path(__file__).resolve().parents[2]


def test_every_metric_is_declared_once_with_a_fixed_label_set_and_listed_in_the_docs():
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"detektr_[a-z_]+", name) for name in names)
    assert all(spec.name.endswith("_total") == (spec.kind == "counter") for spec in CATALOGUE)
    assert all(spec.buckets for spec in CATALOGUE if spec.kind == "histogram")
    page = (REPO / "docs" / "metrics.md").read_text()
    rows = dict(re.findall(r"^\| `(detektr_[a-z_]+)` \| \w+ \| ([^|]*) \|", page, flags=re.M))
    listed = {name: tuple(re.findall(r"`(\w+)`", labels)) for name, labels in rows.items()}
    assert listed == {spec.name: spec.labels for spec in CATALOGUE}


def test_sample_names_belong_to_their_metric():
    assert declared_sample("detektr_frame_latency_seconds_bucket").name == "detektr_frame_latency_seconds"
    assert declared_sample("detektr_camera_frames_total").name == "detektr_camera_frames_total"
    assert declared_sample("detektr_camera_frames") is None
    assert declared_sample("process_cpu_seconds_total") is None
    assert state_label("gated_out") == "gated" and state_label("processed") == "processed"


def test_a_counter_rate_is_its_increase_per_second_and_a_reset_counts_from_zero():
    assert counter_rate(10, 40, 3.0) == 10.0
    assert counter_rate(500, 20, 2.0) == 10.0  # the counter went back: it was reset, 20 since
    assert counter_rate(5, 9, 0.0) == 0.0


def sample(at: float, **cameras: tuple[int, int, int, int]) -> Sample:
    return Sample(at, {name: dict(zip(("captured", "in", "skipped", "processed"), values))
                       for name, values in cameras.items()}, {})


def test_rates_span_the_oldest_sample_within_the_window():
    samples = [sample(t, door=(t * 10, t * 8, t, t * 16)) for t in range(0, 21)]
    older, newer = window_ends(samples, 10.0)
    assert (older.at, newer.at) == (10, 20)
    assert camera_rates(older, newer) == {"door": {"camera_fps": 10.0, "process_fps": 8.0, "skipped_fps": 1.0,
                                                   "detection_fps": 16.0}}
    assert window_ends(samples[:1], 10.0) is None


def test_a_camera_new_in_the_window_counts_from_zero():
    rates = camera_rates(sample(0.0), sample(2.0, yard=(10, 10, 0, 4)))
    assert rates["yard"]["process_fps"] == 5.0 and rates["yard"]["detection_fps"] == 2.0


def test_camera_counts_take_capture_figures_when_capture_runs_the_camera():
    counters = dict.fromkeys(stats.names("camera"), 0) | {"in": 7, "skipped": 2, "processed": 12}
    assert camera_counts(counters, None) == {"captured": 7, "in": 7, "skipped": 2, "processed": 12}
    captured = camera_counts(counters, {"frames_read": 30, "frames_skipped": 5})
    assert captured == {"captured": 30, "in": 7, "skipped": 7, "processed": 12}


def test_inference_speed_is_the_windows_mean_else_the_lifetimes():
    older = {"processed": 0, "inference_us": 100_000, "inference_frames": 10}
    newer = {"processed": 0, "inference_us": 160_000, "inference_frames": 13}
    assert inference_speed_ms(older, newer) == 20.0  # 60 ms over the 3 frames of the window
    assert inference_speed_ms(newer, newer) == pytest.approx(12.31)  # none in the window: the lifetime's mean
    assert inference_speed_ms(None, {"processed": 0, "inference_us": 0, "inference_frames": 0}) == 0.0


def test_backpressure_levels_become_numbers():
    assert [backpressure_number(level) for level in ("normal", "low", "high", "critical", "?")] == [0, 1, 2, 3, 0]


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def test_cluster_families_say_what_the_snapshot_holds():
    processor = dict.fromkeys(stats.names("processor"), 0) | {"routed": 9, "processed": 6, "gated_out": 2,
                                                               "failed": 4, "retries": 3}
    snapshot = ClusterSnapshot(
        cameras={"door": dict.fromkeys(stats.names("camera"), 0) | {"in": 5, "routed": 9, "gated_out": 2}},
        processors={"face": {"counters": processor, "workers": 2, "capacity": 6, "queue_depth": 11,
                             "level": "high", "breaker": "half_open"}},
        ingest=dict.fromkeys(stats.names("ingest"), 0) | {"read": 6, "dead": 1}, lag=3)
    rates = {"door": {"camera_fps": 5.0, "process_fps": 4.5, "skipped_fps": 0.5, "detection_fps": 8.0}}
    registry = CollectorRegistry()
    registry.register(_Families(cluster_families(snapshot, rates)))
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    assert found[("detektr_camera_process_fps", (("camera", "door"),))] == 4.5
    assert found[("detektr_camera_frames_total", (("camera", "door"), ("state", "gated")))] == 2
    assert found[("detektr_camera_frames_total", (("camera", "door"), ("state", "in")))] == 5
    assert found[("detektr_processor_frames_total", (("processor", "face"), ("state", "gated")))] == 2
    assert found[("detektr_processor_failures_total", (("processor", "face"),))] == 4
    assert found[("detektr_processor_backpressure_level", (("processor", "face"),))] == 2
    assert found[("detektr_queue_depth", (("processor", "face"),))] == 11
    circuit = {dict(labels)["state"]: v for (name, labels), v in found.items()
               if name == "detektr_processor_circuit_state"}
    assert circuit == {"closed": 0, "open": 0, "half_open": 1}
    assert found[("detektr_ingest_entries_total", (("outcome", "routed"),))] == 9  # the cameras' routed pairs
    assert found[("detektr_ingest_entries_total", (("outcome", "dead"),))] == 1
    assert found[("detektr_ingest_lag_entries", ())] == 3
    assert {declared_sample(name).scope for name, _ in found} == {"cluster"}


def test_the_inference_timer_records_each_frame_and_hands_over_its_sums_once():
    before = process_registry().get_sample_value("detektr_processor_inference_seconds_count", {"processor": "t1"})
    timer = InferenceTimer("t1")
    assert timer.call(lambda frames: [f * 2 for f in frames], 4, [1, 2, 3, 4]) == [2, 4, 6, 8]
    with pytest.raises(RuntimeError):
        timer.call(lambda: (_ for _ in ()).throw(RuntimeError("boom")), 1)
    taken = timer.take()
    assert taken["inference_frames"] == 4 and taken["inference_us"] >= 0
    assert timer.take() == {}
    after = process_registry().get_sample_value("detektr_processor_inference_seconds_count", {"processor": "t1"})
    assert after - (before or 0) == 4
    assert set(taken) <= set(stats.names("processor"))  # the publish script refuses undeclared counters


def test_a_histogram_is_made_once_per_process():
    assert histogram("detektr_ingest_routing_seconds") is histogram("detektr_ingest_routing_seconds")


def test_a_worker_gets_a_fresh_multiprocess_directory_or_empties_the_one_named(tmp_path):
    environ: dict[str, str] = {}
    path, created = use_multiprocess_dir(environ)
    assert created and environ["PROMETHEUS_MULTIPROC_DIR"] == path and Path(path).is_dir()
    Path(path).rmdir()
    named = tmp_path / "prom"
    named.mkdir()
    (named / "histogram_123.db").write_bytes(b"old")
    (named / "keep.txt").write_text("not ours")
    path, created = use_multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(named)})
    assert (path, created) == (str(named), False)
    assert sorted(p.name for p in named.iterdir()) == ["keep.txt"]

"""Every Prometheus metric detektr exposes, declared once with its fixed label set; the process-local ones recorded.

Two kinds (docs/metrics.md):

- cluster-wide figures, computed on each scrape from what Redis holds (counters, heartbeats,
  breakers, backpressure, capture state) and served only by `detektr api` (`detektr.cluster_metrics`);
- process-local figures, measured where they happen (a worker's processor time and frame latency,
  ingest's routing time) with prometheus_client, and served by each such process on
  `DETEKTR_METRICS__PORT` (`detektr.metrics_server`). Celery's prefork children write them to
  prometheus_client's multiprocess files, so one scrape of a worker sees every child.

prometheus_client is imported on first use, never at import: a worker must set
`PROMETHEUS_MULTIPROC_DIR` before it is imported (`detektr.metrics_server.use_multiprocess_dir`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["counter", "gauge", "histogram"]
Scope = Literal["cluster", "process"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name, type, fixed labels, meaning, who serves it, and its buckets (histograms)."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    scope: Scope
    buckets: tuple[float, ...] = ()


CAMERA_STATES = ("in", "routed", "processed", "dead", "gated", "expired", "skipped")
"""The `state` label of detektr_camera_frames_total."""
PROCESSOR_STATES = ("processed", "skipped", "gated", "expired", "dead")
"""The `state` label of detektr_processor_frames_total: how a (frame, processor) pair ended."""
CIRCUIT_STATES = ("closed", "open", "half_open")
"""The `state` label of detektr_processor_circuit_state."""
INGEST_OUTCOMES = ("read", "routed", "dead", "reclaimed", "duplicates", "ungated")
"""The `outcome` label of detektr_ingest_entries_total."""

CATALOGUE: tuple[MetricSpec, ...] = (
    MetricSpec("detektr_camera_fps", "gauge", ("camera",), "Frames captured per second by the camera (capture's "
               "frames read; for other producers, frames that entered detektr): Frigate's camera_fps.", "cluster"),
    MetricSpec("detektr_camera_process_fps", "gauge", ("camera",), "Frames entering detektr per second: Frigate's "
               "process_fps.", "cluster"),
    MetricSpec("detektr_camera_skipped_fps", "gauge", ("camera",), "Frames shed by detektr plus frames dropped by "
               "capture, per second: Frigate's skipped_fps.", "cluster"),
    MetricSpec("detektr_camera_detection_fps", "gauge", ("camera",), "Frame/processor pairs a processor ran on, per "
               "second: Frigate's detection_fps.", "cluster"),
    MetricSpec("detektr_camera_frames_total", "counter", ("camera", "state"), "A camera's frames: in (entered), "
               "routed (frame/processor pairs), and how the pairs ended.", "cluster"),
    MetricSpec("detektr_processor_frames_total", "counter", ("processor", "state"), "How a processor's frames "
               "ended: processed, skipped, gated, expired or dead.", "cluster"),
    MetricSpec("detektr_processor_routed_total", "counter", ("processor",), "Frames routed to the processor.",
               "cluster"),
    MetricSpec("detektr_processor_failures_total", "counter", ("processor",), "Attempts that raised (each retry "
               "counts).", "cluster"),
    MetricSpec("detektr_processor_retries_total", "counter", ("processor",), "Frames sent back for another attempt.",
               "cluster"),
    MetricSpec("detektr_queue_depth", "gauge", ("processor",), "Messages waiting in the processor's queues (its "
               "workers' own affinity queues included).", "cluster"),
    MetricSpec("detektr_processor_workers", "gauge", ("processor",), "Live workers serving the processor.",
               "cluster"),
    MetricSpec("detektr_processor_capacity", "gauge", ("processor",), "Summed concurrency of its live workers.",
               "cluster"),
    MetricSpec("detektr_processor_backpressure_level", "gauge", ("processor",), "Backpressure level: 0 normal, "
               "1 low, 2 high, 3 critical.", "cluster"),
    MetricSpec("detektr_processor_circuit_state", "gauge", ("processor", "state"), "1 for the circuit breaker's "
               "current state (closed, open, half_open), 0 for the others.", "cluster"),
    MetricSpec("detektr_ingest_entries_total", "counter", ("outcome",), "Ingest's input-stream entries: read, "
               "routed (frame/processor pairs), dead, reclaimed, duplicates, ungated.", "cluster"),
    MetricSpec("detektr_ingest_lag_entries", "gauge", (), "Input-stream entries not yet read by the consumer group.",
               "cluster"),
    MetricSpec("detektr_processor_inference_seconds", "histogram", ("processor",), "The processor function's own "
               "time per frame (a batch's time divided by its frames); no queueing.", "process",
               (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)),
    MetricSpec("detektr_frame_latency_seconds", "histogram", ("camera", "processor"), "From the frame's capture "
               "timestamp to its result being published.", "process",
               (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)),
    MetricSpec("detektr_ingest_routing_seconds", "histogram", (), "Ingest's routing decision time per frame.",
               "process", (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}


def sample_names(spec: MetricSpec) -> set[str]:
    """The sample names a metric appears under in the text exposition."""
    if spec.kind == "histogram":
        return {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"}
    return {spec.name}


def declared_sample(sample: str) -> MetricSpec | None:
    """The declared metric a sample name belongs to, if any."""
    for spec in CATALOGUE:
        if sample in sample_names(spec):
            return spec
    return None


def state_label(counter: str) -> str:
    """A counter's name (`detektr.stats`) as the `state` label says it: gated_out -> gated."""
    return "gated" if counter == "gated_out" else counter


# -- process-local metrics ---------------------------------------------------------------------


_registry: Any = None
_histograms: dict[str, Any] = {}
_lock = threading.Lock()


def process_registry() -> Any:
    """The prometheus_client registry of this process's own metrics (prometheus_client is imported now)."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                import prometheus_client

                prometheus_client.disable_created_metrics()  # *_created: not in the catalogue nor in multiprocess mode
                _registry = prometheus_client.CollectorRegistry()
    return _registry


def histogram(name: str) -> Any:
    """A process-local histogram of the catalogue, made on its first use (so a process shows only what it measures)."""
    if name not in _histograms:
        registry = process_registry()
        with _lock:
            if name not in _histograms:
                from prometheus_client import Histogram

                spec = BY_NAME[name]
                _histograms[name] = Histogram(name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)
    return _histograms[name]


def observe_inference(processor: str, seconds: float, frames: int = 1) -> None:
    """Record a processor's own time on `frames` frames (a batch's time is shared out among its frames)."""
    child = histogram("detektr_processor_inference_seconds").labels(processor)
    for _ in range(frames):
        child.observe(seconds / frames)


def observe_latencies(processor: str, latencies: Iterable[tuple[str, float]]) -> None:
    """Record (camera, seconds from capture to published result) for a processor's published results."""
    latency = histogram("detektr_frame_latency_seconds")
    for camera, seconds in latencies:
        latency.labels(camera, processor).observe(max(0.0, seconds))


def observe_routing(seconds: float) -> None:
    """Record one frame's routing decision time in ingest."""
    histogram("detektr_ingest_routing_seconds").observe(seconds)


class InferenceTimer:
    """Times a processor's calls: each goes to the inference histogram and, summed, to the processor's counters.

    `take()` hands the sums since the last take to the publish script (`inference_us`,
    `inference_frames` in `detektr.stats`), from which the API computes Frigate's inference_speed.
    """

    def __init__(self, processor: str) -> None:
        self.processor = processor
        self._us = 0
        self._frames = 0
        self.last_s = 0.0
        """How long the last call took."""

    def call(self, fn: Any, frames: int, *args: Any) -> Any:
        """`fn(*args)`, timed as the work on `frames` frames (only when it returns)."""
        import time

        started = time.perf_counter()
        result = fn(*args)
        seconds = self.last_s = time.perf_counter() - started
        observe_inference(self.processor, seconds, frames)
        self._us += round(seconds * 1_000_000)
        self._frames += frames
        return result

    def take(self) -> dict[str, int]:
        """The counters to add since the last take (empty when nothing ran)."""
        taken = {"inference_us": self._us, "inference_frames": self._frames} if self._frames else {}
        self._us = self._frames = 0
        return taken

"""Cluster-wide figures for `detektr api`'s `/metrics`: read from Redis on each scrape, frames/s over a window.

Counters, heartbeats, breakers, backpressure levels and capture state are read through the
modules that keep them (`detektr.stats`, `.registry`, `.breaker`, `.capture`, `.accounting`),
as `detektr status` reads them. Frames per second are computed as Frigate computes its camera
figures: events over the last `FPS_WINDOW_S` seconds. The API samples the counters every
`SAMPLE_INTERVAL_S` (`RateSampler`), and a rate is the increase between the newest sample and
the oldest one within the window, divided by the time between them. Everything from reading to
families is split into plain functions of plain data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import keys, stats
from .accounting import collect_accounting
from .backpressure import LEVELS, NORMAL
from .breaker import read_breakers
from .capture import capture_status
from .config import Settings
from .external import WORKER_PREFIX
from .metrics import BY_NAME, CAMERA_STATES, CATALOGUE, CIRCUIT_STATES, INGEST_OUTCOMES, state_label
from .registry import live_processors, queue_depths, read_levels

log = logging.getLogger(__name__)

FPS_WINDOW_S = 10.0
"""Frames per second are counted over this many seconds (Frigate's window for camera_fps)."""
SAMPLE_INTERVAL_S = 1.0
"""How often the API samples the counters that frames per second are computed from."""

FPS_FIGURES = ("camera_fps", "process_fps", "skipped_fps", "detection_fps")
"""Frigate's names of a camera's rates, in order."""


def _names(members: Iterable[Any]) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else m for m in members}


# -- what is read on a scrape -------------------------------------------------------------------


@dataclass
class ClusterSnapshot:
    """The cluster's figures at one moment, as plain data."""

    cameras: dict[str, dict[str, int]] = field(default_factory=dict)
    processors: dict[str, dict[str, Any]] = field(default_factory=dict)
    ingest: dict[str, int] = field(default_factory=dict)
    lag: int = 0


def read_cluster(redis: Any, settings: Settings) -> ClusterSnapshot:
    """Read every cluster-wide figure: cameras' and processors' counters, live workers, queues, breakers, levels."""
    live = live_processors(redis, settings.worker.heartbeat_ttl_s)
    names = sorted(_names(redis.smembers(keys.PROCESSORS_INDEX)) | set(live))
    queues = {name: {p.queue, *(own for _, own in p.own_queues)} for name, p in live.items()}
    depths = queue_depths(redis, set().union(*queues.values()))
    breakers = read_breakers(redis, names)
    levels = read_levels(redis, 5 * settings.beat.processors_interval_s)
    processors = {}
    for name in names:
        proc = live.get(name)
        processors[name] = {
            "counters": stats.read_processor(redis, name),
            "workers": sum(not w.startswith(WORKER_PREFIX) for w in proc.workers) if proc else 0,
            "capacity": proc.capacity if proc else 0,
            "queue_depth": sum(depths.get(queue, 0) for queue in queues.get(name, ())),
            "level": levels.get(name, {}).get("level", NORMAL),
            "breaker": breakers[name].state,
        }
    cameras = {camera: stats.read_camera(redis, camera) for camera in sorted(_names(redis.smembers(
        keys.CAMERAS_INDEX)))}
    ingest = stats.read_ingest(redis)
    books = collect_accounting(redis, settings.input_stream, settings.ingest.group, ingest, {})
    return ClusterSnapshot(cameras, processors, ingest, books["input"]["unread"])


# -- frames per second --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The counters that rates are computed from, at one (monotonic) time."""

    at: float
    cameras: dict[str, dict[str, int]]
    """camera -> captured, in, skipped, processed."""
    processors: dict[str, dict[str, int]]
    """processor -> processed, inference_us, inference_frames."""


def camera_counts(counters: dict[str, int], capture: dict[str, Any] | None) -> dict[str, int]:
    """What a camera's rates count: frames captured (capture's frames read, else frames in), in, skipped, processed.

    Skipped is what detektr shed plus what capture dropped.
    """
    return {"captured": int(capture["frames_read"]) if capture else counters["in"], "in": counters["in"],
            "skipped": counters["skipped"] + (int(capture["frames_skipped"]) if capture else 0),
            "processed": counters["processed"]}


def read_sample(redis: Any, now: float | None = None) -> Sample:
    """Read the counters of every camera and processor that rates need."""
    capture = capture_status(redis)
    cameras = {}
    for camera in sorted(_names(redis.smembers(keys.CAMERAS_INDEX)) | set(capture)):
        cameras[camera] = camera_counts(stats.read_camera(redis, camera), capture.get(camera))
    processors = {}
    for name in sorted(_names(redis.smembers(keys.PROCESSORS_INDEX))):
        counters = stats.read_processor(redis, name)
        processors[name] = {k: counters[k] for k in ("processed", "inference_us", "inference_frames")}
    return Sample(time.monotonic() if now is None else now, cameras, processors)


def counter_rate(older: float, newer: float, seconds: float) -> float:
    """A counter's increase per second between two samples; one that went back was reset, and counts from 0."""
    if seconds <= 0:
        return 0.0
    return (newer - older if newer >= older else newer) / seconds


def window_ends(samples: Iterable[Sample], window_s: float) -> tuple[Sample, Sample] | None:
    """The oldest sample within `window_s` of the newest, and the newest; None with fewer than two."""
    ordered = list(samples)
    if len(ordered) < 2:
        return None
    newest = ordered[-1]
    oldest = next(s for s in ordered if newest.at - s.at <= window_s)
    return (oldest, newest) if oldest is not newest else None


def camera_rates(older: Sample, newer: Sample) -> dict[str, dict[str, float]]:
    """Each camera's Frigate figures (camera_fps, process_fps, skipped_fps, detection_fps) between two samples."""
    seconds = newer.at - older.at
    rates = {}
    for camera, now in newer.cameras.items():
        before = older.cameras.get(camera, dict.fromkeys(now, 0))
        rates[camera] = {figure: round(counter_rate(before[count], now[count], seconds), 2)
                         for figure, count in zip(FPS_FIGURES, ("captured", "in", "skipped", "processed"))}
    return rates


def inference_speed_ms(older: dict[str, int] | None, newer: dict[str, int]) -> float:
    """A processor's mean time per frame in ms: over the window when frames ran in it, else over its lifetime."""
    spent, frames = newer["inference_us"], newer["inference_frames"]
    if older is not None and frames > older["inference_frames"] >= 0 and spent >= older["inference_us"]:
        spent, frames = spent - older["inference_us"], frames - older["inference_frames"]
    return round(spent / frames / 1000, 2) if frames > 0 else 0.0


class RateSampler:
    """Samples the counters every `interval_s` on a thread of its own, keeping `window_s` of samples."""

    def __init__(self, redis: Any, window_s: float = FPS_WINDOW_S, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.redis = redis
        self.window_s = window_s
        self.interval_s = interval_s
        self._samples: deque[Sample] = deque(maxlen=int(window_s / interval_s) + 2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Take one sample now (a server that does not answer is logged, and tried again next time)."""
        try:
            taken = read_sample(self.redis)
        except Exception as exc:  # the server away, or anything odd in it: the figures just age
            log.warning("could not sample the counters for frames/s: %s", exc)
            return
        with self._lock:
            self._samples.append(taken)

    def start(self) -> None:
        """Sample on a daemon thread until `stop()`."""
        def loop() -> None:
            while not self._stop.wait(0 if not self._samples else self.interval_s):
                self.sample()

        self._thread = threading.Thread(target=loop, name="detektr-rates", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def ends(self) -> tuple[Sample, Sample] | None:
        """The samples that span the window now."""
        with self._lock:
            return window_ends(list(self._samples), self.window_s)

    def camera_rates(self) -> dict[str, dict[str, float]]:
        """Each camera's frames per second over the window (empty until two samples are taken)."""
        ends = self.ends()
        return camera_rates(*ends) if ends else {}

    def inference_speeds(self) -> dict[str, float]:
        """Each processor's mean inference time per frame in ms, over the window (or its lifetime)."""
        ends = self.ends()
        if ends is None:
            with self._lock:
                newest = self._samples[-1] if self._samples else None
            return {name: inference_speed_ms(None, c) for name, c in newest.processors.items()} if newest else {}
        older, newer = ends
        return {name: inference_speed_ms(older.processors.get(name), c) for name, c in newer.processors.items()}


# -- Prometheus families ------------------------------------------------------------------------


def cluster_families(snapshot: ClusterSnapshot, rates: dict[str, dict[str, float]]) -> list[Any]:
    """Every cluster-wide metric of the catalogue as a prometheus_client family, from plain data."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    families = {spec.name: (CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily)(
        spec.name, spec.help, labels=spec.labels) for spec in CATALOGUE if spec.scope == "cluster"}

    def add(name: str, value: float, **labels: str) -> None:
        spec = BY_NAME[name]
        if tuple(labels) != spec.labels:
            raise ValueError(f"{name} takes the labels {spec.labels}, not {tuple(labels)}")
        families[name].add_metric([labels[label] for label in spec.labels], value)

    for camera in sorted(set(snapshot.cameras) | set(rates)):
        fps = rates.get(camera, dict.fromkeys(FPS_FIGURES, 0.0))
        add("detektr_camera_fps", fps["camera_fps"], camera=camera)
        add("detektr_camera_process_fps", fps["process_fps"], camera=camera)
        add("detektr_camera_skipped_fps", fps["skipped_fps"], camera=camera)
        add("detektr_camera_detection_fps", fps["detection_fps"], camera=camera)
    for camera, counters in snapshot.cameras.items():
        for counter, value in counters.items():
            if state_label(counter) in CAMERA_STATES:
                add("detektr_camera_frames_total", value, camera=camera, state=state_label(counter))
    for name, proc in snapshot.processors.items():
        counters = proc["counters"]
        for counter in ("processed", "skipped", "gated_out", "expired", "dead"):  # PROCESSOR_STATES
            add("detektr_processor_frames_total", counters[counter], processor=name, state=state_label(counter))
        add("detektr_processor_routed_total", counters["routed"], processor=name)
        add("detektr_processor_failures_total", counters["failed"], processor=name)
        add("detektr_processor_retries_total", counters["retries"], processor=name)
        add("detektr_queue_depth", proc["queue_depth"], processor=name)
        add("detektr_processor_workers", proc["workers"], processor=name)
        add("detektr_processor_capacity", proc["capacity"], processor=name)
        add("detektr_processor_backpressure_level", backpressure_number(proc["level"]), processor=name)
        for state in CIRCUIT_STATES:
            add("detektr_processor_circuit_state", float(proc["breaker"] == state), processor=name, state=state)
    routed = sum(counters["routed"] for counters in snapshot.cameras.values())
    for outcome in INGEST_OUTCOMES:
        add("detektr_ingest_entries_total", routed if outcome == "routed" else snapshot.ingest.get(outcome, 0),
            outcome=outcome)
    add("detektr_ingest_lag_entries", snapshot.lag)
    return list(families.values())


def backpressure_number(level: str) -> int:
    """A backpressure level as a number: normal 0, low 1, high 2, critical 3 (an unknown level counts as 0)."""
    return LEVELS.index(level) if level in LEVELS else 0


class ClusterCollector:
    """A prometheus_client collector that reads the cluster's figures on each scrape."""

    def __init__(self, redis: Any, settings: Settings, sampler: RateSampler) -> None:
        self.redis = redis
        self.settings = settings
        self.sampler = sampler

    def collect(self) -> Iterator[Any]:
        """The families of one scrape."""
        yield from cluster_families(read_cluster(self.redis, self.settings), self.sampler.camera_rates())

    def describe(self) -> list[Any]:
        """Nothing to describe ahead: registering must not read Redis."""
        return []

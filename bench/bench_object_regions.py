"""`objects` on motion regions against the whole frame: distant people found, and the time it takes.

The astronaut photo (a person, her box marked by hand) is pasted into a 1280x720 frame of the
coffee photo at several sizes and places. Each frame goes through `objects` twice: as a frame
without motion's boxes (the whole frame letterboxed to 416x416), and as it arrives behind
`motion`'s gate, with the pasted box as the moving region (a 416x416-or-larger crop around it).
A person counts as found with a detection labelled person at IoU >= 0.5 with her box.

    .venv/bin/python bench/bench_object_regions.py [--sizes 80,100,120,160,240] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detektr import Frame  # noqa: E402
from detektr.workers.objects import ObjectsSettings, detect_objects, setup_objects  # noqa: E402
from tests.workers.conftest import Composer, iou  # noqa: E402


def frame(image, boxes=None) -> Frame:
    gate = {"motion": True, "area": 0.01, "boxes": [list(b) for b in boxes]} if boxes else None
    return Frame(image=image, frame_id="f", camera_id="c", timestamp=0.0, gate_result=gate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="80,100,120,160,240", help="pasted sizes, in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (median)")
    args = parser.parse_args()
    state = setup_objects(ObjectsSettings())
    wide = Composer((1280, 720))
    print("| person size (px, in 1280x720) | placements | found on the whole frame | found around motion |")
    print("|---|---|---|---|")
    samples = []
    for side in (int(s) for s in args.sizes.split(",")):
        whole = regions = placements = 0
        for x, y in itertools.product((40, 400, 760, 1280 - side - 40), (40, 720 - side - 40)):
            image, person = wide.with_person(side, x, y)
            samples.append((image, (x, y, side, side)))
            placements += 1
            for boxes, counter in ((None, "whole"), ([(x, y, side, side)], "regions")):
                found = detect_objects(frame(image, boxes), state)["objects"]
                hit = any(o["label"] == "person" and iou(o["box"], person) >= 0.5 for o in found)
                whole += hit and counter == "whole"
                regions += hit and counter == "regions"
        print(f"| {side} | {placements} | {whole} | {regions} |")
    times = {"whole frame": [], "around motion (one region)": []}
    for _ in range(args.rounds):
        for name, with_boxes in (("whole frame", False), ("around motion (one region)", True)):
            started = time.perf_counter()
            for image, box in samples:
                detect_objects(frame(image, [box] if with_boxes else None), state)
            times[name].append((time.perf_counter() - started) / len(samples) * 1000)
    print()
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.1f} ms a frame (median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()

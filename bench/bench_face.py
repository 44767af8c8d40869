"""`face` (BlazeFace) against OpenCV's Haar cascade, and detection around motion against the whole frame.

    .venv/bin/python bench/bench_face.py [--rounds 5] [--frames 48] [--samples 20] [--only speed|faces]

Speed: the same frames (bench_detectors.compose: the astronaut's face, about 95 px at 640x360,
moving over the coffee background) through the Haar cascade as `face` ran it before BlazeFace
(grey, equalised, downscaled to 960 wide, scale 1.1, 5 neighbours, 30 px minimum) and through
`face` set up three ways: the whole frame only (DETEKTR_FACE_MIN_FACE_PX=0), the default (the
whole frame plus tiles where a 40 px face would be too small), and behind `motion` (each frame
with the boxes `motion` found on it, as the pipeline passes them). Rounds interleave the
detectors; the figures are medians of per-round frames/s, in one process.

Small faces: frames of 1280x720 (and 640x360) with the face pasted at 40-64 px at random
places; each frame follows five frames of the bare background on a camera of its own, so
`motion` reports a box around the pasted face. Counts the frames where each way finds the face
(IoU >= 0.4) and the faces found that are not it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_detectors import DATA, compose  # noqa: E402

from detektr import Frame  # noqa: E402
from detektr.workers.face import FaceSettings, detect_faces, setup_face  # noqa: E402
from detektr.workers.motion import MotionSettings, detect_motion, setup_motion  # noqa: E402

FACE_IN_PHOTO = (177, 66, 95, 95)
CROP = (140, 30, 170, 170)


class Haar:
    """The Haar cascade as `face` ran it before BlazeFace (its default settings then)."""

    def __init__(self) -> None:
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def __call__(self, frame: Frame) -> list[list[int]]:
        grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        scale = 1.0
        if grey.shape[1] > 960:
            scale = grey.shape[1] / 960
            grey = cv2.resize(grey, (960, round(grey.shape[0] / scale)), interpolation=cv2.INTER_AREA)
        found = self.cascade.detectMultiScale(cv2.equalizeHist(grey), scaleFactor=1.1, minNeighbors=5,
                                              minSize=(30, 30))
        return [[round(v * scale) for v in box] for box in found]


def iou(a, b) -> float:
    w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - w * h
    return w * h / union if union else 0.0


def with_motion(frames: list[Frame], warmup: list[Frame]) -> list[Frame]:
    """The frames as `face` gets them behind `motion`: each with motion's result on it (one camera)."""
    state = setup_motion(MotionSettings())
    for frame in warmup:
        detect_motion(frame, state)
    out = []
    for frame in frames:
        result = detect_motion(frame, state)
        out.append(Frame(image=frame.image, frame_id=frame.frame_id, camera_id=frame.camera_id,
                         timestamp=frame.timestamp, gate_result=result))
    return out


def speed(size: tuple[int, int], count: int, rounds: int) -> dict[str, float]:
    """Frames/s of Haar and of `face` three ways on the same frames, rounds interleaved: medians."""
    frames = compose(count, size)
    still = compose(1, size)[0]
    gated = with_motion(frames, [still] * 5)
    whole = setup_face(FaceSettings(min_face_px=0))
    default = setup_face(FaceSettings())
    haar = Haar()
    ways: dict[str, tuple[Callable[[Frame], object], list[Frame]]] = {
        "haar": (haar, frames),
        "face, whole frame only": (lambda f: detect_faces(f, whole), frames),
        "face, default (whole frame + tiles)": (lambda f: detect_faces(f, default), frames),
        "face, behind motion (regions)": (lambda f: detect_faces(f, default), gated),
    }
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for name, (run, batch) in ways.items():
        for frame in batch[:4]:
            run(frame)  # warm-up
    for _ in range(rounds):
        for name, (run, batch) in ways.items():
            start = time.perf_counter()
            for frame in batch:
                run(frame)
            samples[name].append(len(batch) / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def small_faces(size: tuple[int, int], samples: int, seed: int = 0) -> list[tuple[int, dict[str, tuple[int, int]]]]:
    """Per face size: for each way, (frames where the face was found, other faces reported)."""
    rng = np.random.default_rng(seed)
    background = cv2.resize(cv2.imread(str(DATA / "coffee.png")), size, interpolation=cv2.INTER_AREA)
    x, y, w, h = CROP
    crop = cv2.imread(str(DATA / "astronaut.png"))[y : y + h, x : x + w]
    whole = setup_face(FaceSettings(min_face_px=0))
    default = setup_face(FaceSettings())
    haar = Haar()
    rows = []
    for face_px in (40, 48, 56, 64):
        scale = face_px / FACE_IN_PHOTO[2]
        side = round(170 * scale)
        pasted = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
        counts = {"haar": [0, 0], "whole frame": [0, 0], "whole frame + tiles": [0, 0], "around motion": [0, 0]}
        for i in range(samples):
            px, py = int(rng.integers(0, size[0] - side)), int(rng.integers(0, size[1] - side))
            image = background.copy()
            image[py : py + side, px : px + side] = pasted
            truth = (px + round(37 * scale), py + round(36 * scale), face_px, face_px)

            def noisy(picture: np.ndarray) -> np.ndarray:
                return np.clip(picture + rng.normal(0, 2, picture.shape), 0, 255).astype(np.uint8)

            camera = f"cam{face_px}-{i}"
            warmup = [Frame(image=noisy(background), frame_id=f"w{k}", camera_id=camera, timestamp=k) for k in range(5)]
            frame = Frame(image=noisy(image), frame_id="f", camera_id=camera, timestamp=5.0)
            (gated,) = with_motion([frame], warmup)
            found = {
                "haar": haar(frame),
                "whole frame": [f["box"] for f in detect_faces(frame, whole)["faces"]],
                "whole frame + tiles": [f["box"] for f in detect_faces(frame, default)["faces"]],
                "around motion": [f["box"] for f in detect_faces(gated, default)["faces"]],
            }
            for way, boxes in found.items():
                hit = any(iou(box, truth) >= 0.4 for box in boxes)
                counts[way][0] += hit
                counts[way][1] += len(boxes) - hit
        rows.append((face_px, {way: (hits, other) for way, (hits, other) in counts.items()}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--samples", type=int, default=20, help="frames per face size for the small-face counts")
    parser.add_argument("--only", choices=["speed", "faces"], help="only the speed, or only the small-face counts")
    args = parser.parse_args()
    import onnxruntime

    print(f"OpenCV {cv2.__version__}, onnxruntime {onnxruntime.__version__} "
          f"({', '.join(onnxruntime.get_available_providers())}), {os.cpu_count()} cores")
    for size in ((640, 360), (1280, 720)) if args.only != "faces" else ():
        figures = speed(size, args.frames, args.rounds)
        print(f"\nspeed, {size[0]}x{size[1]}, {args.frames} frames x {args.rounds} rounds (median frames/s)")
        for name, fps in figures.items():
            print(f"  {name:<38}{fps:>8.1f} fps {1000 / fps:>7.2f} ms  {fps / figures['haar']:>5.1f}x haar")
    for size in ((1280, 720), (640, 360)) if args.only != "speed" else ():
        print(f"\nsmall faces, {size[0]}x{size[1]}, {args.samples} frames per size: found (IoU >= 0.4) / other faces")
        rows = small_faces(size, args.samples)
        ways = list(rows[0][1])
        print("  face px " + "".join(f"{way:>22}" for way in ways))
        for face_px, counts in rows:
            print(f"  {face_px:>7} " + "".join(f"{f'{hits}/{args.samples}  +{other}':>22}"
                                              for hits, other in counts.values()))


if __name__ == "__main__":
    main()

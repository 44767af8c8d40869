"""Detector throughput: frames per second of each shipped detector in a plain loop (not a test; run by hand).

    .venv/bin/python bench/bench_detectors.py [--size 640x360] [--rounds 5] [--frames 48] [--provider cuda]

Frames are composed from the shared photographs (/work/shared/data): the coffee background
resized to the frame size, with the astronaut's face pasted at a place that moves 24 pixels per
frame, so `motion` sees movement on every frame and `face` finds one face. Each detector is
called directly (no Celery, no Redis) after its setup, on `--frames` frames per round, and the
table gives the median over `--rounds` rounds. `scene` and `model` are run both one frame per
call (batch 1) and eight frames per call (batch 8), on CUDA when present, else the CPU.
`objects` runs the shipped NanoDet-m on onnxruntime (`--provider`: auto, cpu or cuda, i.e.
DETEKTR_ONNXRUNTIME_PROVIDER), and `hog` the same processor with its HOG fallback
(DETEKTR_OBJECTS_DETECTOR=hog), on the same frames. `onnx` runs a stand-in ONNX network built
here (the `model` stand-in with a YOLOv8-style head: 400 boxes, 80 classes, 320x320, dynamic
batch), one and eight frames per call.

The `model` figures use a small stand-in network built here (four stride-2 convolutions and a
1x1 head giving 400 boxes per image at the default 320x320 input), saved as TorchScript; they
show the runner's cost and the batching gain, not what your own model will reach.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detektr import Frame  # noqa: E402
from detektr.runtime import set_up  # noqa: E402

DATA = next((folder / "shared" / "data" for folder in REPO.parents if (folder / "shared" / "data").is_dir()),
            REPO / ".." / "shared" / "data")


def compose(count: int, size: tuple[int, int]) -> list[Frame]:
    """`count` frames of `size` with the face pasted at a place moving right (wrapping around)."""
    width, height = size
    background = cv2.resize(cv2.imread(str(DATA / "coffee.png")), size, interpolation=cv2.INTER_AREA)
    crop = cv2.imread(str(DATA / "astronaut.png"))[30:200, 140:310]
    side = round(170 * height / 360)
    crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        image = background.copy()
        x = (i * round(24 * width / 640)) % (width - side)
        y = (height - side) // 2
        image[y : y + side, x : x + side] = crop
        noise = rng.normal(0, 2, image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        frames.append(Frame(image=image, frame_id=f"f{i}", camera_id="cam1", timestamp=float(i)))
    return frames


def rate(run: Callable[[list[Frame]], None], frames: list[Frame], rounds: int) -> float:
    """Median frames per second of `run` over `rounds` passes over `frames` (after one warm-up pass)."""
    run(frames[:8])
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(frames)
        samples.append(len(frames) / (time.perf_counter() - start))
    return statistics.median(samples)


def one_by_one(fn: Callable, state: object) -> Callable[[list[Frame]], None]:
    """A single-frame processor over a list of frames."""
    return lambda frames: [fn(frame, state) for frame in frames]


def batched(fn: Callable, state: object, size: int) -> Callable[[list[Frame]], None]:
    """A batched processor over a list of frames, `size` frames per call."""
    return lambda frames: [fn(frames[i : i + size], state) for i in range(0, len(frames), size)]


def conv_body(torch):
    """Four stride-2 convolutions, 3 to 128 channels (stride 16): the stand-in detectors' body."""
    channels = [3, 16, 32, 64, 128]
    layers = []
    for a, b in zip(channels, channels[1:]):
        layers += [torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


def stand_in_model(path: Path) -> None:
    """Save a small convolutional detector following the model contract as TorchScript."""
    import torch

    class StandIn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = conv_body(torch)
            self.head = torch.nn.Conv2d(128, 6, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.sigmoid(self.head(self.body(x)))  # [N, 6, H/16, W/16]
            h, w = float(x.shape[2]), float(x.shape[3])
            rows = out.flatten(2).transpose(1, 2)  # [N, K, 6]
            scale = torch.tensor([w, h, w, h, 1.0, 10.0], device=x.device)
            return rows * scale

    torch.manual_seed(0)
    torch.jit.script(StandIn().eval()).save(str(path))


def stand_in_onnx(path: Path) -> None:
    """Export a small convolutional detector with a YOLOv8-style output [N, 84, 400] (320x320) to ONNX."""
    import warnings

    import torch

    class StandInYolo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = conv_body(torch)  # stride 16: 20x20 cells at 320
            self.head = torch.nn.Conv2d(128, 84, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.head(self.body(x)).flatten(2)  # [N, 84, 400]
            boxes = torch.sigmoid(out[:, :4]) * 320.0
            scores = torch.sigmoid(out[:, 4:] - 5.0)  # mostly low, as a trained detector's are
            return torch.cat([boxes, scores], dim=1)

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(StandInYolo().eval(), (torch.zeros(1, 3, 320, 320),), str(path), dynamo=False,
                          input_names=["images"], output_names=["output0"],
                          dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, opset_version=17)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="640x360", help="frame size WxH (default 640x360)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=48, help="frames per round, a multiple of 8")
    parser.add_argument("--only", default="", help="comma-separated detectors to run (default: all)")
    parser.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"],
                        help="onnxruntime's provider for objects and onnx (DETEKTR_ONNXRUNTIME_PROVIDER)")
    args = parser.parse_args()
    os.environ["DETEKTR_ONNXRUNTIME_PROVIDER"] = args.provider
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = compose(args.frames, (width, height))
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    rows: list[tuple[str, str, float]] = []

    def wanted(name: str) -> bool:
        return not only or name in only

    if wanted("motion"):
        from detektr.workers.motion import detect_motion

        state = set_up(detect_motion.spec)
        for frame in compose(8, (width, height))[:1] * 5:
            detect_motion(frame, state)  # past the learning frames
        rows.append(("motion", "1", rate(one_by_one(detect_motion, state), frames, args.rounds)))
    if wanted("face"):
        from detektr.workers.face import detect_faces

        rows.append(("face", "1", rate(one_by_one(detect_faces, set_up(detect_faces.spec)), frames, args.rounds)))
    provider = ""
    if wanted("objects"):
        from detektr.workers.objects import detect_objects

        state = set_up(detect_objects.spec)
        provider = state.model.provider
        rows.append(("objects", "1", rate(one_by_one(detect_objects, state), frames, args.rounds)))
    if wanted("hog"):
        from detektr.workers.objects import detect_objects

        os.environ["DETEKTR_OBJECTS_DETECTOR"] = "hog"
        state = set_up(detect_objects.spec)
        del os.environ["DETEKTR_OBJECTS_DETECTOR"]
        rows.append(("hog", "1", rate(one_by_one(detect_objects, state), frames, args.rounds)))
    if wanted("onnx"):
        from detektr.workers.onnx import run_onnx

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "stand_in.onnx"
            stand_in_onnx(path)
            os.environ["DETEKTR_ONNX_MODEL"] = str(path)
            state = set_up(run_onnx.spec)
            provider = state.model.provider
            for size in (1, 8):
                rows.append(("onnx", str(size), rate(batched(run_onnx, state, size), frames, args.rounds)))
    device = ""
    if wanted("scene"):
        from detektr.workers.scene import detect_tampering

        state = set_up(detect_tampering.spec)
        device = str(state.device)
        for size in (1, 8):
            rows.append(("scene", str(size), rate(batched(detect_tampering, state, size), frames, args.rounds)))
    if wanted("model"):
        from detektr.workers.model import run_model

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "stand_in.pt"
            stand_in_model(path)
            os.environ["DETEKTR_MODEL_PATH"] = str(path)
            state = set_up(run_model.spec)
            device = str(state.device)
            for size in (1, 8):
                rows.append(("model", str(size), rate(batched(run_model, state, size), frames, args.rounds)))

    threads = ""
    if "torch" in sys.modules and device:
        import torch

        threads = f", torch {torch.__version__} on {device} with {torch.get_num_threads()} threads"
    if provider:
        import onnxruntime

        threads += f", onnxruntime {onnxruntime.__version__} on {provider}"
    print(
        f"frames {width}x{height}, {args.frames} frames x {args.rounds} rounds (median), "
        f"OpenCV {cv2.__version__}, {os.cpu_count()} cores{threads}"
    )
    print(f"{'detector':<10}{'batch':>6}{'frames/s':>11}{'ms/frame':>10}")
    for name, size, fps in rows:
        print(f"{name:<10}{size:>6}{fps:>11.1f}{1000 / fps:>10.2f}")


if __name__ == "__main__":
    main()

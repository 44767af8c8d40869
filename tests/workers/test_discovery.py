"""The shipped detectors are discovered, and importing them stays cheap (torch, onnxruntime only where they run)."""

from __future__ import annotations

import subprocess
import sys

from detektr.discovery import builtin_modules

from .conftest import REPO_ROOT

DETECTORS = {"motion", "face", "objects", "scene", "model", "onnx"}


def test_every_detector_module_is_discovered_and_helpers_are_not():
    modules = set(builtin_modules())
    assert {f"detektr.workers.{name}" for name in DETECTORS} <= modules
    assert not {name for name in modules if name.rsplit(".", 1)[-1].startswith("_")}


def test_importing_every_worker_module_does_not_import_torch():
    code = (
        "import sys\n"
        "from detektr.discovery import import_processors\n"
        "from detektr.processor import REGISTRY\n"
        "import_processors()\n"
        f"missing = {sorted(DETECTORS)!r}\n"
        "assert set(missing) <= set(REGISTRY), sorted(REGISTRY)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

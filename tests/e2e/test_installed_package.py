"""`celery -A detektr worker -Q sample -c 4` works from an installed package, from any directory.

The wheel holds `detektr` alone at its top level, so a directory with its own `celeryconfig.py`
and `workers` package (a common Celery habit) changes nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """detektr built as a wheel and installed into a folder of its own (dependencies from this venv)."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a clean copy: a build/ folder left from an older layout would end up in the wheel
    shutil.copytree(REPO, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, cwd=out)
    wheel = next(out.glob("detektr-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"detektr/celeryconfig.py", "detektr/workers/sample.py", "detektr/beat/checks.py",
            "detektr/ingest.py"} <= set(names)
    # the shipped detector model and its licence notices (nothing is downloaded at run time)
    assert {"detektr/models/nanodet-m-coco-416.onnx", "detektr/models/LICENSE.human-models",
            "detektr/models/NOTICE", "detektr/models/blazeface-full-range.onnx",
            "detektr/models/blazeface-short-range.onnx", "detektr/models/LICENSE.mediapipe",
            "detektr/workers/objects.py", "detektr/workers/_onnx.py"} <= set(names)
    top = {name.split("/")[0] for name in names}
    assert {name for name in top if not name.endswith(".dist-info")} == {"detektr"}, top
    site = out / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    return site


def test_worker_runs_from_the_installed_package_in_a_directory_with_its_own_celeryconfig(installed, module_db_url,
                                                                                       tmp_path):
    home = tmp_path / "home"
    (home / "workers").mkdir(parents=True)
    poison = "raise RuntimeError('a user module was imported instead of detektr\'s')\n"
    (home / "celeryconfig.py").write_text(poison)
    (home / "workers" / "__init__.py").write_text(poison)
    (home / "beat.py").write_text(poison)
    cluster = Cluster(module_db_url, tmp_path)
    cluster.env["PYTHONPATH"] = str(installed)  # the installed copy, not the repository
    try:
        probe = subprocess.run([sys.executable, "-c", "import detektr, detektr.celeryconfig; print(detektr.__file__)"],
                               env=cluster.env, cwd=home, capture_output=True, text=True, check=True)
        assert probe.stdout.startswith(str(installed))
        model = subprocess.run([sys.executable, "-c", "from detektr.workers._onnx import shipped_model\n"
                                "print(shipped_model('nanodet-m-coco-416.onnx'))"],
                               env=cluster.env, cwd=home, capture_output=True, text=True, check=True)
        assert model.stdout.startswith(str(installed)), model.stdout
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "detektr", "worker", "-Q", "sample", "-c", "4"],
            cwd=home, env=cluster.env, stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT)
        cluster.processes["worker"] = worker
        ingest = subprocess.Popen([str(Path(sys.executable).parent / "detektr"), "ingest"], cwd=home, env=cluster.env,
                                  stdout=open(tmp_path / "ingest.log", "wb"), stderr=subprocess.STDOUT)
        cluster.processes["ingest"] = ingest
        cluster.wait_live("sample")
        frame_id = producer(cluster.redis).add("cam01", jpeg(seed=1), capabilities=["sample_processing"])
        wait_for(lambda: [e for e in results(cluster.redis, "sample:results") if e["frame_id"] == frame_id],
                 message="result from the installed worker")
    finally:
        cluster.stop()

"""`celery -A detektr worker -Q sample -c 4` works from an installed package, outside the repository."""

from __future__ import annotations

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
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, cwd=out)
    wheel = next(out.glob("detektr-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"celeryconfig.py", "workers/sample.py", "beat/checks.py", "detektr/ingest.py"} <= set(names)
    assert not [name for name in names if name.startswith("tests/")]
    site = out / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    return site


def test_worker_runs_from_the_installed_package_in_another_directory(installed, module_db_url, tmp_path):
    cluster = Cluster(module_db_url, tmp_path)
    cluster.env["PYTHONPATH"] = str(installed)  # the installed copy, not the repository
    try:
        probe = subprocess.run([sys.executable, "-c", "import detektr, celeryconfig; print(detektr.__file__)"],
                               env=cluster.env, cwd=tmp_path, capture_output=True, text=True, check=True)
        assert probe.stdout.startswith(str(installed))
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "detektr", "worker", "-Q", "sample", "-c", "4"],
            cwd=tmp_path, env=cluster.env, stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT)
        cluster.processes["worker"] = worker
        cluster.ingest()
        cluster.wait_live("sample")
        frame_id = producer(cluster.redis).add("cam01", jpeg(seed=1), capabilities=["sample_processing"])
        wait_for(lambda: [e for e in results(cluster.redis, "sample:results") if e["frame_id"] == frame_id],
                 message="result from the installed worker")
    finally:
        cluster.stop()

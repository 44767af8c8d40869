"""`detektr bench --smoke` runs the whole suite at tiny sizes and writes its report (nothing about speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detektr.bench.report import SECTIONS

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def test_bench_smoke_writes_the_report_with_every_section_and_the_plot(tmp_path):
    report, plot = tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "images" / "bench-latency.png"
    out = subprocess.run([str(BIN / "detektr"), "bench", "--smoke", "--output", str(report), "--plot", str(plot)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = report.read_text()
    for section in SECTIONS:
        assert f"## {section}" in text
    for system in ("detektr (ingest", "frames stored by reference", "plain Celery app", "minimal Streams consumer",
                   "decode-only ceiling"):
        assert system in text
    assert "](images/bench-latency.png)" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| worker (child 1) |" in text and "| server |" in text

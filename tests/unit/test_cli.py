"""The `detektr` command: what it is, its version, and every mistake a user can make as one line with status 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from detektr import __version__
from detektr.cli import main

DETEKTR = str(Path(sys.executable).parent / "detektr")


@pytest.fixture
def no_server(monkeypatch) -> str:
    """REDIS_URL pointing at a loopback port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    monkeypatch.setenv("REDIS_URL", url)
    return url


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_help_says_what_detektr_is_and_version_prints_it():
    help_text = subprocess.run([DETEKTR, "--help"], capture_output=True, text=True, check=True).stdout
    assert "detektr: an open frame orchestrator for camera AI." in " ".join(help_text.split())
    version = subprocess.run([DETEKTR, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"detektr {__version__}"


@pytest.mark.parametrize("argv", [["inject", "--duration", "1"], ["status"], ["status", "--json"],
                                  ["capture", "--camera", "door", "--source", "synthetic"]])
def test_no_server_is_one_line_with_what_to_do_and_no_password(no_server, capsys, argv):
    assert main(argv) == 2
    line = one_line(capsys)
    assert line.startswith(f"detektr {argv[0]}: cannot reach redis://***@127.0.0.1:")
    assert "set REDIS_URL" in line and "hunter2" not in line


def test_a_misused_command_is_one_line(capsys):
    assert main(["capture", "--source", "synthetic"]) == 2
    assert one_line(capsys) == "detektr capture: give --config FILE, or --camera ID --source SOURCE"


def test_injecting_for_a_capability_nobody_offers_waits_then_says_so(valkey_server, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", f"{valkey_server.connection_url}/15")
    assert main(["inject", "--capabilities", "nobody_offers_this", "--wait", "0.3", "--duration", "1"]) == 2
    line = one_line(capsys)
    assert line.startswith("detektr inject: no live processor offers nobody_offers_this after 0.3 s")


def test_a_near_miss_of_a_setting_is_reported(no_server, monkeypatch, caplog):
    monkeypatch.setenv("DETEKTR_ROUTNG", "affinity")
    monkeypatch.setenv("DETEKTR_MYCAM_THING", "1")  # not near any setting: may belong to a processor
    main(["status"])
    warned = [r.getMessage() for r in caplog.records if "is not a detektr setting" in r.getMessage()]
    assert warned == ["DETEKTR_ROUTNG is not a detektr setting (did you mean DETEKTR_ROUTING?); it is ignored"]


def test_the_demo_names_an_unknown_processor_and_the_known_ones(monkeypatch, capsys, no_server):
    assert main(["demo", "--processors", "nosuch", "--duration", "1"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("detektr demo: unknown processors: nosuch (known: ") and "sample" in line

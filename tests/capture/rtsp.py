"""Start and stop a real RTSP server (rtsp_server.py under Debian's system python) from the tests."""

from __future__ import annotations

import functools
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('videotestsrc', 'videoconvert', 'jpegenc', 'rtpjpegpay') "
    "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))"
)


@functools.cache
def missing_reason() -> str | None:
    """Why the RTSP server cannot run here (None when it can)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the RTSP server runs under Debian's python3-gi)"
    try:
        check = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "checking the GStreamer bindings timed out"
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server bindings missing ({last}); install .ci/apt-packages.txt"
    if check.stdout.strip():
        return f"GStreamer elements missing: {check.stdout.strip()}; install .ci/apt-packages.txt"
    return None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RtspServer:
    """GStreamer's RTSP server serving a moving test pattern (MJPEG over RTP) at rtsp://127.0.0.1:<port>/stream."""

    def __init__(self, log_path: Path, *, user: str | None = None, password: str | None = None,
                 width: int = 320, height: int = 240, fps: int = 15) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.user, self.password = user, password
        self.options = ["--width", str(width), "--height", str(height), "--fps", str(fps)]
        if user:
            self.options += ["--user", user, "--password", password or ""]
        self.process: subprocess.Popen[str] | None = None

    def url(self, user: str | None = None, password: str | None = None, path: str = "/stream") -> str:
        """The stream URL, with the server's credentials unless others are given."""
        user, password = user or self.user, password or self.password
        credentials = f"{user}:{password}@" if user else ""
        return f"rtsp://{credentials}127.0.0.1:{self.port}{path}"

    def start(self, timeout_s: float = 15.0) -> RtspServer:
        """Start the server (on the same port as before, when restarted) and wait until it listens."""
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), *self.options],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith("ready"):
                    return self
                if not line:
                    break
            if self.process.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"RTSP server did not start on port {self.port}; see {self.log_path}")

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung camera, a pulled cable)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        """Stop the server (SIGKILL; a frozen one too)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

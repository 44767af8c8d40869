"""The `detektr` command: ingest, inject, capture, status, api, demo.

Every failure a user can cause (bad settings, no server, an unknown processor) is one line on
stderr that says what to do, with exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

import redis

from . import __version__
from .config import Settings, core_variables, load_settings, unknown_variables
from .errors import ConfigError, UsageError
from .redaction import redact_url

DESCRIPTION = ("detektr: an open frame orchestrator for camera AI. Cameras append frames to a Redis Stream; "
               "detektr routes each frame to your processors on Celery workers and publishes their results "
               "to Redis Streams.")

log = logging.getLogger("detektr")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Run the ingest loop until SIGTERM or Ctrl-C (it waits for a server that is not up yet)."""
    from . import tracing
    from .celery_app import app
    from .ingest import FrameIngestor
    from .memory import keep_freed_memory

    tracing.start(tracing.INGEST_SERVICE_NAME)  # when the OTEL_* variables ask for it
    keep_freed_memory(settings.ingest.keep_freed_mb)
    client = redis.Redis.from_url(settings.redis_url)
    ingestor = FrameIngestor(settings, client, app, consumer=args.consumer)
    if settings.metrics.port:
        from .metrics_server import port_problem, serve_metrics

        try:
            serve_metrics(settings.metrics, shown=("detektr_ingest_routing_seconds",))
        except OSError as exc:
            raise UsageError(port_problem(settings.metrics, exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.getLogger("detektr").info("ingest connecting to %s", redact_url(settings.redis_url))
    try:
        ingestor.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        tracing.shutdown()  # export the spans still waiting
    return 0


def cmd_inject(args: argparse.Namespace, settings: Settings) -> int:
    """Write synthetic JPEG frames to the input stream."""
    from .inject import inject
    from .producer import FrameProducer

    client = redis.Redis.from_url(settings.redis_url)
    client.ping()
    producer = FrameProducer(client, settings.input_stream, maxlen=settings.input_maxlen,
                             frame_ttl_s=settings.frames.ttl_s, by_reference=args.by_reference)
    caps = [c for c in (args.capabilities or "").split(",") if c] or None
    if caps and args.wait > 0:
        from .registry import wait_for_capabilities

        missing = wait_for_capabilities(client, settings.worker.heartbeat_ttl_s, caps, args.wait)
        if missing:
            raise UsageError(f"no live processor offers {', '.join(missing)} after {args.wait:g} s; start a worker "
                             "for it (celery -A detektr worker -Q <processor>), or --wait 0 to send anyway")
    report = inject(producer, rate_fps=args.rate, duration_s=args.duration, cameras=args.cameras,
                    width=args.width, height=args.height, quality=args.quality, capabilities=caps,
                    priority=args.priority, max_frames=args.max_frames)
    print(f"sent {report.sent} frames in {report.elapsed_s:.1f}s ({report.fps:.1f} frames/s) "
          f"from {args.cameras} camera(s) to {settings.input_stream}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print live workers, processors and per-camera figures (with --watch: again and again, in place)."""
    from .status import collect_status, status_tables

    if args.watch and (args.json or args.interval <= 0):
        raise UsageError("--watch refreshes the tables every --interval seconds (more than 0); --json prints once")
    client = redis.Redis.from_url(settings.redis_url)
    status = collect_status(client, settings)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or captured: no terminal width to fit, so do not squeeze the columns
        console = Console(width=200)
    if args.watch:
        from .status import watch_status

        return watch_status(console, lambda: collect_status(client, settings), args.interval)
    for table in status_tables(status):
        console.print(table)
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the control API and the cluster-wide /metrics until SIGTERM or Ctrl-C."""
    import socket

    from .api import serve

    host, port = args.host or settings.api.host, args.port or settings.api.port
    try:  # say so in one line, before uvicorn starts, when the address cannot be had
        socket.create_server((host, port)).close()
    except (OSError, OverflowError) as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}); choose "
                         "another --port (or DETEKTR_API__PORT)") from None
    log.info("api on http://%s:%d (docs at /docs) for %s; mutations %s", host, port, redact_url(settings.redis_url),
             "need the token" if settings.api_token else "refused (no DETEKTR_API_TOKEN)")
    serve(settings, host, port, args.log_level)
    return 0


def cmd_capture(args: argparse.Namespace, settings: Settings) -> int:
    """Read cameras into the input stream until SIGTERM or Ctrl-C (or until every file is read)."""
    from .cameras import load_cameras, single_camera
    from .capture import CaptureSupervisor

    if bool(args.config) == bool(args.source) or (args.source and not args.camera):
        raise UsageError("give --config FILE, or --camera ID --source SOURCE")
    if args.config:
        config = load_cameras(args.config)
    else:
        camera = {"id": args.camera, "source": args.source, "fps": args.fps, "width": args.width,
                  "height": args.height, "quality": args.quality, "capabilities": args.capabilities,
                  "priority": args.priority, "live": args.live, "loop": args.loop, "max_queued": args.max_queued}
        config = single_camera(camera, {"no_frame_timeout_s": args.no_frame_timeout})
    client = redis.Redis.from_url(settings.redis_url)
    client.ping()
    supervisor = CaptureSupervisor(client, settings, config, fail_fast=bool(args.source) and not args.keep_trying,
                                   max_frames=args.max_frames)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.getLogger("detektr").info("capture: %d camera(s) into %s on %s", len(config.cameras),
                                      settings.input_stream, redact_url(settings.redis_url))
    try:
        code = supervisor.run(stop)
    except KeyboardInterrupt:
        stop.set()
        supervisor.join()
        code = 0
    for camera_id, reason in supervisor.failures.items():
        print(f"detektr capture: {camera_id}: {reason}", file=sys.stderr)
    for camera_id, capture in supervisor.captures.items():
        state = capture.state
        print(f"{camera_id}: {state.frames_captured} frames captured, {state.frames_skipped} skipped, "
              f"{state.reconnects} reconnects ({state.state})")
    return code


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run everything on this machine."""
    from rich.console import Console

    from .demo import Demo, DemoOptions

    options = DemoOptions(duration_s=args.duration, cameras=args.cameras, rate_fps=args.rate,
                          processors=tuple(p for p in (args.processors or "").split(",") if p))
    return Demo(settings, options, Console()).run()


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark suite and write its report."""
    import shlex
    from pathlib import Path

    try:
        import matplotlib  # noqa: F401
        import psutil  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"detektr bench needs {exc.name}: pip install 'detektr[bench]'") from None
    from .bench.report import write
    from .bench.suite import SuiteOptions, run_suite

    options = SuiteOptions.smoke_run() if args.smoke else SuiteOptions()
    if args.repetitions:
        options.repetitions = args.repetitions
    results = run_suite(options, repo=Path.cwd())
    command = "detektr bench " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else [])
    write(results, command.strip(), Path(args.output), Path(args.plot))
    print(f"wrote {args.output} and {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `detektr` command."""
    parser = argparse.ArgumentParser(prog="detektr", description=DESCRIPTION,
                                     epilog="Workers: celery -A detektr worker -Q <processor> -c <n>. "
                                     "Settings: REDIS_URL and DETEKTR_* variables (docs/configuration.md).")
    parser.add_argument("--version", action="version", version=f"detektr {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="turn input-stream frames into routed Celery tasks")
    ingest.add_argument("--consumer", help="consumer name in the group (default: host-pid)")
    ingest.set_defaults(func=cmd_ingest)

    inject = sub.add_parser("inject", help="load generator: synthetic JPEG frames into the input stream")
    inject.add_argument("--rate", type=float, default=10.0, help="frames/s per camera (0: as fast as possible)")
    inject.add_argument("--duration", type=float, default=10.0, help="seconds")
    inject.add_argument("--cameras", type=int, default=1)
    inject.add_argument("--width", type=int, default=640)
    inject.add_argument("--height", type=int, default=360)
    inject.add_argument("--quality", type=int, default=80, help="JPEG quality")
    inject.add_argument("--capabilities", help="comma-separated; default: every live capability")
    inject.add_argument("--priority", type=int, default=0, choices=range(10), metavar="0-9")
    inject.add_argument("--max-frames", type=int, help="stop after this many frames")
    inject.add_argument("--by-reference", action="store_true", help="store bytes under image_key, not inline")
    inject.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait for a live processor offering each of --capabilities (default 30)")
    inject.set_defaults(func=cmd_inject)

    status = sub.add_parser("status", help="live workers, processors and cameras")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    status.set_defaults(func=cmd_status)

    api = sub.add_parser("api", help="the control API (OpenAPI at /docs) and the cluster-wide /metrics")
    api.add_argument("--host", help="address to listen on (default DETEKTR_API__HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (default DETEKTR_API__PORT, 8080)")
    api.set_defaults(func=cmd_api)

    demo = sub.add_parser("demo", help="run the whole pipeline on this machine")
    demo.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C)")
    demo.add_argument("--cameras", type=int, default=2)
    demo.add_argument("--rate", type=float, default=5.0, help="frames/s per camera")
    demo.add_argument("--processors", help="comma-separated (default: all shipped)")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="run the benchmark suite on an embedded server; write docs/benchmarks.md")
    bench.add_argument("--smoke", action="store_true", help="tiny sizes, to check that it runs (figures mean nothing)")
    bench.add_argument("--repetitions", type=int, help="repetitions of each comparison (default 3)")
    bench.add_argument("--output", default="docs/benchmarks.md", help="the report (default docs/benchmarks.md)")
    bench.add_argument("--plot", default="docs/images/bench-latency.png",
                       help="the plot (default docs/images/bench-latency.png)")
    bench.set_defaults(func=cmd_bench)

    capture = sub.add_parser("capture", help="read cameras (RTSP, files, devices, synthetic) into the input stream")
    capture.add_argument("--config", help="YAML file of cameras (see docs/capture.md)")
    capture.add_argument("--camera", help="camera id (with --source)")
    capture.add_argument("--source", help="rtsp://user:pass@host/path, a video file, a device index, or synthetic")
    capture.add_argument("--fps", type=float, help="most frames/s sent on (default: the source's rate)")
    capture.add_argument("--width", type=int, help="resize to this width (keeps the aspect ratio)")
    capture.add_argument("--height", type=int, help="resize to this height")
    capture.add_argument("--quality", type=int, help="JPEG quality (default 80)")
    capture.add_argument("--capabilities", help="comma-separated; default: every live capability")
    capture.add_argument("--priority", type=int, help="0-9, 9 most urgent (default 0)")
    capture.add_argument("--live", action=argparse.BooleanOptionalAction,
                         help="skip stale frames (default: yes, except for files)")
    capture.add_argument("--loop", action="store_true", default=None, help="play a file again when it ends")
    capture.add_argument("--max-queued", type=int, help="frames allowed to wait for ingest (default 1 live, 64 file)")
    capture.add_argument("--no-frame-timeout", type=float, help="seconds without a frame before reconnecting")
    capture.add_argument("--keep-trying", action="store_true",
                         help="with --source: retry a source that fails to open instead of exiting")
    capture.add_argument("--max-frames", type=int, help="stop each camera after this many frames")
    capture.set_defaults(func=cmd_capture)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `detektr` command."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    settings: Settings | None = None
    try:
        settings = load_settings()
        for line in unknown_variables(os.environ, core_variables(), only_near_known=True):
            log.warning("%s; it is ignored", line)
        return int(args.func(args, settings) or 0)
    except ConfigError as exc:  # bad settings or cameras file: one line that names them, not a traceback
        return _fail(args.command, f"invalid configuration: {exc}")
    except UsageError as exc:
        return _fail(args.command, str(exc))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        url = redact_url(settings.redis_url) if settings else "the server"
        return _fail(args.command, f"cannot reach {url} ({exc}); start a Redis-compatible server there, or set "
                     "REDIS_URL to one (detektr demo starts its own)")


def _fail(command: str, message: str) -> int:
    print(f"detektr {command}: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

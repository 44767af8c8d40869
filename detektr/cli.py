"""The `detektr` command: ingest, inject, status, demo."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

import redis

from .config import load_settings, redact_url


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_ingest(args: argparse.Namespace) -> int:
    """Run the ingest loop until SIGTERM or Ctrl-C."""
    from .celery_app import app
    from .ingest import FrameIngestor

    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    ingestor = FrameIngestor(settings, client, app, consumer=args.consumer)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.getLogger("detektr").info("ingest connecting to %s", redact_url(settings.redis_url))
    try:
        ingestor.run(stop)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    """Write synthetic JPEG frames to the input stream."""
    from .inject import inject
    from .producer import FrameProducer

    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    producer = FrameProducer(client, settings.input_stream, maxlen=settings.input_maxlen,
                             frame_ttl_s=settings.frames.ttl_s, by_reference=args.by_reference)
    caps = [c for c in (args.capabilities or "").split(",") if c] or None
    report = inject(producer, rate_fps=args.rate, duration_s=args.duration, cameras=args.cameras,
                    width=args.width, height=args.height, quality=args.quality, capabilities=caps,
                    priority=args.priority, max_frames=args.max_frames)
    print(f"sent {report.sent} frames in {report.elapsed_s:.1f}s ({report.fps:.1f} frames/s) "
          f"from {args.cameras} camera(s) to {settings.input_stream}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print live workers, processors and per-camera figures."""
    from .status import collect_status, status_tables

    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        status = collect_status(client, settings)
    except redis.ConnectionError as exc:
        print(f"cannot reach {redact_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    for table in status_tables(status):
        console.print(table)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run everything on this machine."""
    from rich.console import Console

    from .demo import Demo, DemoOptions

    options = DemoOptions(duration_s=args.duration, cameras=args.cameras, rate_fps=args.rate,
                          processors=tuple(p for p in (args.processors or "").split(",") if p))
    return Demo(load_settings(), options, Console()).run()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `detektr` command."""
    parser = argparse.ArgumentParser(prog="detektr", description=__doc__)
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
    inject.set_defaults(func=cmd_inject)

    status = sub.add_parser("status", help="live workers, processors and cameras")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo", help="run the whole pipeline on this machine")
    demo.add_argument("--duration", type=float, help="seconds (default: until Ctrl-C)")
    demo.add_argument("--cameras", type=int, default=2)
    demo.add_argument("--rate", type=float, default=5.0, help="frames/s per camera")
    demo.add_argument("--processors", help="comma-separated (default: all shipped)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `detektr` command."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""What tracing costs a frame: detektr's span hooks with tracing off, and on.

Runs, per frame, the hooks ingest and a worker call for one frame sent in a task of its own
(`detektr.frame_spans`: receive, route, dispatch, end of receive, sending, processing) around
work that does nothing, and subtracts the same loop without the hooks. Off is what every frame
pays when no `OTEL_*` variable asks for tracing. On records the spans into a batch span processor
whose exporter drops them (the export itself runs in the processor's own thread). `--flush` also
times a `force_flush` of one task's spans to an OTLP/HTTP receiver in this process: what flushing
after every task would cost, instead of only when a pool process ends.

    .venv/bin/python bench/bench_tracing.py [--frames 20000] [--runs 5] [--flush 200]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from detektr import frame_spans, tracing
from detektr.frame import FrameEntry, FrameRef
from detektr.router import Destination, FramePlan

PLAN = FramePlan(destinations=(Destination("sample", "sample"),))
ENTRY = FrameEntry(frame_id="f1", camera_id="cam", timestamp=1.0, image_key="k",
                   traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
REF = FrameRef(frame_id="f1", camera_id="cam", timestamp=1.0, format="jpeg", image_key="k",
               traceparent=ENTRY.traceparent, ingested_at=1.0)


def bare(frames: int) -> float:
    """The loop without hooks: seconds."""
    start = time.perf_counter()
    for _ in range(frames):
        payload = {"traceparent": ENTRY.traceparent}
        plan = PLAN
        if plan.destinations and payload:
            pass
    return time.perf_counter() - start


def hooked(frames: int) -> float:
    """The loop with every per-frame hook of ingest and a worker: seconds."""
    start = time.perf_counter()
    for _ in range(frames):
        span = frame_spans.receive(ENTRY, "1-0", 0)
        with frame_spans.routing(span) as route:
            plan = PLAN
            route.chose(plan)
        payload = {"traceparent": ENTRY.traceparent}
        if span is not None:
            payload["traceparent"] = frame_spans.dispatch(span, "sample", "sample")
        frame_spans.end_receive(span, routed=True)
        with frame_spans.sending("sample", "sample", [payload]):
            pass
        with frame_spans.processing("sample", REF) as ref:
            pass
        assert ref is not None
    return time.perf_counter() - start


def per_frame_ns(frames: int, runs: int) -> float:
    """Median over `runs` of the hooks' cost per frame, in ns."""
    hooked(frames // 10)  # warm up
    return statistics.median((hooked(frames) - bare(frames)) / frames * 1e9 for _ in range(runs))


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--flush", type=int, default=200, help="tasks to time force_flush over (0: none)")
    args = parser.parse_args()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    off = per_frame_ns(args.frames, args.runs)

    class Dropping(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    tracing._tracing = tracing.ProcessTracing(provider)
    on = per_frame_ns(args.frames // 10, args.runs)
    provider.shutdown()
    print("| tracing | hooks per frame (ingest + worker, one-frame task) |")
    print("|---|---|")
    print(f"| off (no OTEL_* variables) | {off:.0f} ns |")
    print(f"| on (its 4 spans; batch span processor, exporter dropping them) | {on / 1000:.1f} µs |")

    if args.flush:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        provider = TracerProvider()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        tracing._tracing = tracing.ProcessTracing(provider)
        times = []
        for _ in range(args.flush):
            hooked(1)
            start = time.perf_counter()
            provider.force_flush()
            times.append(time.perf_counter() - start)
        provider.shutdown()
        server.shutdown()
        print(f"| force_flush after every task (OTLP/HTTP on loopback), median | "
              f"{statistics.median(times) * 1000:.2f} ms |")
    tracing._tracing = None


if __name__ == "__main__":
    main()

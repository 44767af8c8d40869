"""Tracing (`detektr.tracing`, `detektr.frame_spans`): which OTEL_* variables turn it on, how a frame's spans connect.

The span tests give the module a tracer of its own that records into memory; they set no global
tracer provider and instrument nothing (the end-to-end test, tests/e2e/test_tracing.py, does).
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from detektr import frame_spans, tracing
from detektr.errors import ConfigError
from detektr.frame import FrameEntry, FrameRef
from detektr.router import Destination, FramePlan

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, []),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_BSP_SCHEDULE_DELAY": "100"}, []),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp_proto_http"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp_proto_http"]),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ["otlp_proto_grpc"]),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, ["otlp_proto_http"]),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp_proto_http", "console"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
])
def test_the_otel_variables_decide_whether_and_where_spans_go(environ, expected):
    assert tracing.exporter_names(environ) == expected


def test_an_otlp_protocol_detektr_cannot_export_with_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json'"):
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_an_exporter_that_is_not_installed_is_refused_naming_its_package():
    assert [cls.__name__ for cls in tracing.exporter_classes(["otlp_proto_http"])] == ["OTLPSpanExporter"]
    with pytest.raises(ConfigError, match="needs a span exporter of that name"):
        tracing.exporter_classes(["no_such_exporter"])
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install opentelemetry-exporter-otlp-proto-grpc"):
            tracing.exporter_classes(["otlp_proto_grpc"])


def test_without_tracing_nothing_is_recorded_and_frames_keep_their_traceparent():
    assert tracing.active() is None
    ref = _ref(TRACEPARENT)
    with frame_spans.processing("alpha", ref) as traced:
        assert traced is ref
    with frame_spans.processing_batch("alpha", [ref]) as traced_batch:
        assert traced_batch == [ref]
    with frame_spans.routing(None) as route:
        route.chose(FramePlan(destinations=()))
    with frame_spans.sending("alpha", "alpha", [ref.model_dump()]):
        pass
    assert frame_spans.receive(_entry(TRACEPARENT), "1-0", 0) is None
    assert frame_spans.dispatch(None, "alpha", "alpha") is None


@pytest.fixture
def spans(monkeypatch):
    """A tracer of detektr.tracing's own, recording into memory (no global provider, no instrumentation)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracing", tracing.ProcessTracing(provider))

    def finished() -> dict[str, list]:
        found: dict[str, list] = {}
        for span in exporter.get_finished_spans():
            found.setdefault(span.name, []).append(span)
        return found

    return finished


def _entry(traceparent: str | None, frame_id: str = "f1") -> FrameEntry:
    return FrameEntry(frame_id=frame_id, camera_id="cam", timestamp=1.0, image_key="k", traceparent=traceparent)


def _ref(traceparent: str | None, frame_id: str = "f1") -> FrameRef:
    return FrameRef(frame_id=frame_id, camera_id="cam", timestamp=1.0, format="jpeg", image_key="k",
                    traceparent=traceparent, ingested_at=1.0)


def _ingest(frame_id: str, traceparent: str | None) -> dict:
    """What ingest does for one frame: receive, route, dispatch (held); the payload of its task."""
    receive = frame_spans.receive(_entry(traceparent, frame_id), "1-0", 0)
    with frame_spans.routing(receive) as route:
        route.chose(FramePlan(destinations=(Destination("alpha", "alpha", (("face", "face"),)),)))
    payload = _ref(traceparent, frame_id).model_dump(exclude_none=True)
    payload["traceparent"] = frame_spans.dispatch(receive, "alpha", "alpha")
    frame_spans.end_receive(receive, routed=True)
    return payload


def _span_id(traceparent: str) -> int:
    return int(traceparent.split("-")[2], 16)


def test_a_one_frame_task_is_sent_and_processed_in_the_frames_trace(spans):
    from opentelemetry import trace

    payload = _ingest("f1", TRACEPARENT)
    assert tracing.active() is not None and "detektr.dispatch" not in spans(), "open while the frame is held"
    with frame_spans.sending("alpha", "alpha", [payload]):
        sent_from = trace.get_current_span().get_span_context()  # what Celery's apply_async span would be a child of
    found = spans()
    receive, route, dispatch = found["detektr.receive"][0], found["detektr.route"][0], found["detektr.dispatch"][0]
    assert {s.context.trace_id for s in (receive, route, dispatch)} == {int(TRACE_ID, 16)}
    assert receive.parent.span_id == _span_id(TRACEPARENT) and receive.parent.is_remote
    assert route.parent.span_id == dispatch.parent.span_id == receive.context.span_id
    assert list(route.attributes["detektr.processors"]) == ["alpha", "face"]
    assert sent_from.span_id == dispatch.context.span_id == _span_id(payload["traceparent"])
    assert "detektr.send" not in found

    # The worker: the Celery run/ span (here a stand-in) is in the frame's trace, so it is the parent.
    tracer = trace.get_tracer("test", tracer_provider=tracing._tracing.provider)
    celery_context = tracing._tracing.parent(payload["traceparent"])
    with tracer.start_as_current_span("run/detektr.process.alpha", context=celery_context) as run:
        with frame_spans.processing("alpha", FrameRef.model_validate(payload)) as traced:
            assert trace.get_current_span().get_span_context().span_id != run.get_span_context().span_id
    process = spans()["detektr.process"][0]
    assert process.parent.span_id == run.get_span_context().span_id
    assert process.context.trace_id == int(TRACE_ID, 16) and not process.links
    assert _span_id(traced.traceparent) == process.context.span_id


def test_a_task_of_several_frames_has_its_own_trace_linked_to_each_frames(spans):
    from opentelemetry import trace

    payloads = [_ingest("f1", TRACEPARENT), _ingest("f2", None)]
    with frame_spans.sending("alpha", "alpha", payloads):
        task_context = trace.get_current_span().get_span_context()
    found = spans()
    send = found["detektr.send"][0]
    dispatches = {s.context.span_id: s for s in found["detektr.dispatch"]}
    assert send.context.span_id == task_context.span_id and send.parent is None
    assert {link.context.span_id for link in send.links} == set(dispatches)
    assert all(s.attributes["detektr.task_frames"] == 2 for s in dispatches.values())
    frame_traces = {s.context.trace_id for s in dispatches.values()}
    assert len(frame_traces) == 2 and send.context.trace_id not in frame_traces  # f2 got a new trace

    tracer = trace.get_tracer("test", tracer_provider=tracing._tracing.provider)
    with tracer.start_as_current_span("run/detektr.process.alpha", context=trace.set_span_in_context(
            trace.NonRecordingSpan(task_context))) as run:
        for payload in payloads:
            with frame_spans.processing("alpha", FrameRef.model_validate(payload)):
                pass
    for process, payload in zip(spans()["detektr.process"], payloads):
        assert process.parent.span_id == _span_id(payload["traceparent"])  # the frame's dispatch span
        assert process.context.trace_id == dispatches[process.parent.span_id].context.trace_id
        assert [link.context.span_id for link in process.links] == [run.get_span_context().span_id]


def test_a_failing_processor_marks_its_span_and_a_skipped_frame_ends_its_dispatch(spans):
    payload = _ingest("f1", TRACEPARENT)
    frame_spans.dispatch_skipped(payload)
    with pytest.raises(RuntimeError), frame_spans.processing("alpha", FrameRef.model_validate(payload)):
        raise RuntimeError("boom")
    with pytest.raises(ValueError), frame_spans.processing_batch("alpha", [_ref(None, "a"), _ref(None, "b")]):
        raise ValueError("bad batch")
    found = spans()
    assert found["detektr.dispatch"][0].attributes["detektr.skipped"] is True
    processes = found["detektr.process"]
    assert [s.status.description for s in processes] == ["RuntimeError: boom"] + ["ValueError: bad batch"] * 2
    assert [s.events[0].name for s in processes] == ["exception"] * 3
    assert processes[1].context.trace_id != processes[2].context.trace_id  # frames without traceparent: own traces

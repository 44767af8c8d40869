"""End to end: one frame, one trace, across real `detektr ingest` and a real prefork worker.

An OTLP/HTTP receiver in this process (`OtlpReceiver`: an http.server thread decoding
`ExportTraceServiceRequest`) collects what the processes export. The worker recycles its pool
process after every task (`--max-tasks-per-child 1`) and exports only every 60 s on its own, so its
spans arrive only if the pool process flushes them on its way out. A second worker, with a threads
pool, runs a gate, a retry and a batched processor with tracing on.
"""

from __future__ import annotations

import gzip
import importlib.util
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import Cluster, wait_for
from tests.e2e.util import jpeg, producer, results

pytestmark = pytest.mark.e2e

CAPABILITY = "sample_processing"
RESULTS = "sample:results"
TASK = "detektr.process.sample"
INGEST_SPANS = ("detektr.receive", "detektr.route", "detektr.dispatch")


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class OtlpReceiver:
    """An OTLP/HTTP receiver on a free loopback port: keeps every span POSTed to /v1/traces, decoded."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                receiver.keep(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keep(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    with self.lock:
                        self.spans.append({
                            "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(), "attributes": _attributes(span.attributes),
                            "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                            "status": span.status.code, "resource": resource,
                        })

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    yield running
    running.close()


@pytest.fixture(scope="module")
def traced(cluster: Cluster, receiver: OtlpReceiver) -> Cluster:
    """Ingest and a prefork `sample` worker, both exporting to the receiver; the worker recycles its pool process."""
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100"}
    cluster.worker("sample", concurrency=1, **{**otel, "OTEL_BSP_SCHEDULE_DELAY": "60000",
                                               "CELERY_WORKER_MAX_TASKS_PER_CHILD": "1"})
    cluster.ingest(**otel)
    cluster.wait_live("sample")
    cluster.otel = otel  # type: ignore[attr-defined]
    return cluster


def _result(client: Any, frame_id: str) -> dict[str, Any] | None:
    return next((entry for entry in results(client, RESULTS) if entry["frame_id"] == frame_id), None)


def _by_name(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        found.setdefault(span["name"], []).append(span)
    return found


def _stop(cluster: Cluster, name: str) -> None:
    """Stop one process as an operator would (SIGTERM), and wait for it."""
    process = cluster.processes.pop(name)
    process.terminate()
    process.wait(20)


def test_one_frame_yields_one_connected_trace_across_ingest_and_the_worker_process(traced, receiver):
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    frame_id = producer(traced.redis).add("cam-t1", jpeg(seed=1), capabilities=[CAPABILITY],
                                          traceparent=f"00-{trace_id}-{parent_id}-01")
    result = wait_for(lambda: _result(traced.redis, frame_id), timeout_s=60, message="the frame's result")
    wanted = {*INGEST_SPANS, f"apply_async/{TASK}", f"run/{TASK}", "detektr.process"}
    wait_for(lambda: wanted <= set(_by_name(receiver.received())), timeout_s=30,
             message=f"spans {sorted(wanted)} (the worker's come only from its pool process's flush on recycling)")

    spans = receiver.received()
    assert {span["trace_id"] for span in spans} == {trace_id}, "every span is in the frame's trace"
    found = _by_name(spans)
    assert all(len(found[name]) == 1 for name in wanted), {name: len(found[name]) for name in wanted}
    one = {name: found[name][0] for name in wanted}
    receive, route, dispatch = one["detektr.receive"], one["detektr.route"], one["detektr.dispatch"]
    apply_async, run, process = one[f"apply_async/{TASK}"], one[f"run/{TASK}"], one["detektr.process"]
    # receive -> dispatch -> apply_async -> run -> process, route beside dispatch: no gap.
    assert receive["parent"] == parent_id
    assert route["parent"] == dispatch["parent"] == receive["span_id"]
    assert apply_async["parent"] == dispatch["span_id"]
    assert run["parent"] == apply_async["span_id"]
    assert process["parent"] == run["span_id"]
    assert route["attributes"]["detektr.processors"] == ["sample"]
    assert receive["attributes"]["detektr.frame_id"] == process["attributes"]["detektr.frame_id"] == frame_id
    assert dispatch["attributes"]["detektr.processor"] == process["attributes"]["detektr.processor"] == "sample"

    ingest_pid, worker_pid = traced.processes["ingest"].pid, traced.processes["sample"].pid
    for span in (receive, route, dispatch, apply_async):
        assert span["resource"]["service.name"] == "detektr-ingest"
        assert span["resource"]["process.pid"] == ingest_pid
    for span in (run, process):
        assert span["resource"]["service.name"] == "detektr-worker"
        assert span["resource"]["process.pid"] not in (ingest_pid, worker_pid), "run in a pool process, after the fork"

    assert result["traceparent"] == f"00-{trace_id}-{process['span_id']}-01", "a consumer continues the trace"
    ingest_log = (traced.log_dir / "ingest.log").read_text()
    assert "detektr.tracing: spans of detektr-ingest go to OTLPSpanExporter" in ingest_log


def test_frames_sharing_a_task_each_keep_their_trace_and_link_to_the_tasks(traced, receiver):
    _stop(traced, "ingest")  # the frames wait in the stream, and the next ingest reads them in one batch
    before = len(receiver.received())
    traces = [secrets.token_hex(16) for _ in range(3)]
    frame_ids = producer(traced.redis).add_many([
        ("cam-t2", jpeg(seed=i), {"capabilities": [CAPABILITY], "traceparent": f"00-{t}-{secrets.token_hex(8)}-01"})
        for i, t in enumerate(traces)])
    traced.ingest("ingest2", **traced.otel)  # type: ignore[attr-defined]
    got = wait_for(lambda: all(_result(traced.redis, f) for f in frame_ids) and
                   [_result(traced.redis, f) for f in frame_ids], timeout_s=60, message="three results")
    wait_for(lambda: len(_by_name(receiver.received()[before:]).get("detektr.process", [])) == 3, timeout_s=30,
             message="three processor spans")
    # ingest exports on its own schedule: its spans may come after the worker's
    wait_for(lambda: len(_by_name(receiver.received()[before:]).get("detektr.dispatch", [])) == 3
             and "detektr.send" in _by_name(receiver.received()[before:]), timeout_s=30,
             message="ingest's dispatch and send spans")

    found = _by_name(receiver.received()[before:])
    assert len(found["detektr.send"]) == 1 and len(found[f"run/{TASK}"]) == 1, "one task carried the three frames"
    send, run = found["detektr.send"][0], found[f"run/{TASK}"][0]
    assert send["attributes"]["detektr.frames"] == 3
    assert run["trace_id"] == send["trace_id"] not in traces
    dispatches = {span["span_id"]: span for span in found["detektr.dispatch"]}
    assert {span_id for _, span_id in send["links"]} == set(dispatches)
    receives = {span["span_id"]: span for span in found["detektr.receive"]}
    for process, trace_id, entry in zip(sorted(found["detektr.process"], key=lambda s: traces.index(s["trace_id"])),
                                        traces, got):
        dispatch = dispatches[process["parent"]]
        assert process["trace_id"] == dispatch["trace_id"] == trace_id
        assert receives[dispatch["parent"]]["trace_id"] == trace_id
        assert process["links"] == [(run["trace_id"], run["span_id"])]
        assert entry["traceparent"] == f"00-{trace_id}-{process['span_id']}-01"
    runs = [span for span in receiver.received() if span["name"] == f"run/{TASK}"]  # this module's tasks so far
    pids = {span["resource"]["process.pid"] for span in runs}
    assert len(runs) >= 1 and len(pids) == len(runs), "each task ran in a pool process of its own (recycled after one)"


def _trace_of(spans: list[dict[str, Any]], trace_id: str) -> dict[str, dict[str, Any]]:
    return {span["span_id"]: span for span in spans if span["trace_id"] == trace_id}


def _ancestors(span: dict[str, Any], spans: dict[str, dict[str, Any]]) -> list[str]:
    """The names of a span's ancestors in `spans`, nearest first; stops at the first parent not there."""
    names = []
    while span["parent"] in spans:
        span = spans[span["parent"]]
        names.append(span["name"])
    return names


def test_a_gate_a_retry_and_a_batch_stay_in_the_frames_trace(traced, receiver):
    # A threads pool: no fork; tracing starts before the worker's first heartbeat.
    traced.worker("gatekeeper,follower,flaky,batcher", name="chain", concurrency=2, pool="threads",
                  **traced.otel)  # type: ignore[attr-defined]
    traced.wait_live("gatekeeper", "follower", "flaky", "batcher")
    gated, retried, batched = (secrets.token_hex(16) for _ in range(3))
    frames = producer(traced.redis)
    gated_id = frames.add("cam-t4", jpeg(seed=4), capabilities=["following"], metadata={"open": True},
                          traceparent=f"00-{gated}-{secrets.token_hex(8)}-01")
    retried_id = frames.add("cam-t5", jpeg(seed=5), capabilities=["flaky"],
                            traceparent=f"00-{retried}-{secrets.token_hex(8)}-01")
    batched_id = frames.add("cam-t6", jpeg(seed=6), capabilities=["batching"],
                            traceparent=f"00-{batched}-{secrets.token_hex(8)}-01")
    expected = {"results:follower": gated_id, "results:flaky": retried_id, "results:batcher": batched_id}
    got = wait_for(lambda: all(any(e["frame_id"] == frame_id for e in results(traced.redis, stream))
                               for stream, frame_id in expected.items()) and
                   {stream: next(e for e in results(traced.redis, stream) if e["frame_id"] == frame_id)
                    for stream, frame_id in expected.items()}, timeout_s=60, message="three results")

    def processor_spans(trace_id: str, count: int) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            return [s for s in receiver.received() if s["trace_id"] == trace_id and s["name"] == "detektr.process"]
        return wait_for(lambda: len(found()) >= count and found(), timeout_s=30,
                        message=f"processor spans of {trace_id}")

    # The gate: the follower's processor span descends from the gatekeeper's, through Celery's spans.
    gate_spans = processor_spans(gated, 2)
    spans = _trace_of(receiver.received(), gated)
    follower = next(s for s in gate_spans if s["attributes"]["detektr.processor"] == "follower")
    assert _ancestors(follower, spans)[:4] == ["run/detektr.process.follower", "apply_async/detektr.process.follower",
                                               "detektr.process", "run/detektr.process.gatekeeper"]
    assert _ancestors(follower, spans)[-2:] == ["detektr.dispatch", "detektr.receive"]
    assert got["results:follower"]["traceparent"] == f"00-{gated}-{follower['span_id']}-01"

    # The retry: the failed attempt's span is marked, the second attempt's descends from its task.
    first, second = sorted(processor_spans(retried, 2), key=lambda s: s["attributes"]["detektr.attempt"])
    spans = _trace_of(receiver.received(), retried)
    assert first["status"] == 2 and second["status"] != 2  # STATUS_CODE_ERROR
    run, apply_async = "run/detektr.process.flaky", "apply_async/detektr.process.flaky"
    assert _ancestors(second, spans) == [run, apply_async, run, apply_async, "detektr.dispatch", "detektr.receive"]
    assert first["parent"] in _chain_ids(second, spans), "the retry is sent from the failed attempt's task"
    assert got["results:flaky"]["traceparent"] == f"00-{retried}-{second['span_id']}-01"

    # The batch: the frame's span is a child of its dispatch span, linked to the batch's run/ span.
    (batch_span,) = processor_spans(batched, 1)
    spans = _trace_of(receiver.received(), batched)
    assert _ancestors(batch_span, spans) == ["detektr.dispatch", "detektr.receive"]
    (link,) = batch_span["links"]
    assert link[0] != batched and any(s["span_id"] == link[1] and s["name"] == "run/detektr.process.batcher"
                                      for s in receiver.received())
    assert batch_span["attributes"]["detektr.batch_frames"] == 1
    assert got["results:batcher"]["traceparent"] == f"00-{batched}-{batch_span['span_id']}-01"


def _chain_ids(span: dict[str, Any], spans: dict[str, dict[str, Any]]) -> list[str]:
    """The ids of a span's ancestors in `spans`, nearest first."""
    ids = []
    while span["parent"] in spans:
        ids.append(span["parent"])
        span = spans[span["parent"]]
    return ids


def test_without_otel_variables_nothing_is_traced_and_frames_flow(traced, receiver):
    for name in ("ingest2", "sample", "chain"):
        _stop(traced, name)
    before = len(receiver.received())
    traced.worker("sample", concurrency=1, name="sample-plain")
    traced.ingest("ingest-plain")
    traced.wait_live("sample")
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    frame_id = producer(traced.redis).add("cam-t3", jpeg(seed=9), capabilities=[CAPABILITY], traceparent=traceparent)
    result = wait_for(lambda: _result(traced.redis, frame_id), timeout_s=60, message="the frame's result")
    assert result["traceparent"] == traceparent, "no span was made: the frame's own context reaches its result"
    _stop(traced, "ingest-plain")  # a traced process would export what it still holds now
    assert len(receiver.received()) == before
    for name in ("ingest-plain", "sample-plain"):
        assert "detektr.tracing" not in (traced.log_dir / f"{name}.log").read_text()


def test_otel_variables_that_cannot_work_stop_ingest_and_the_worker_in_one_line(cluster):
    assert importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None, "not a dependency of detektr"
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    worker = cluster.worker("sample", name="sample-grpc", OTEL_EXPORTER_OTLP_PROTOCOL="grpc", **endpoint)
    ingest = cluster.ingest("ingest-json", OTEL_EXPORTER_OTLP_PROTOCOL="http/json", **endpoint)
    assert worker.wait(60) == 2 and ingest.wait(60) == 2
    for name in ("sample-grpc", "ingest-json"):
        cluster.processes.pop(name)
    assert (cluster.log_dir / "sample-grpc.log").read_text().strip().splitlines() == [
        "detektr worker: invalid tracing configuration: OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package "
        "opentelemetry-exporter-otlp-proto-grpc, which is not installed (pip install "
        "opentelemetry-exporter-otlp-proto-grpc, or use the OTLP protocol http/protobuf)"]
    assert (cluster.log_dir / "ingest-json.log").read_text().strip().splitlines()[-1] == (
        "detektr ingest: invalid configuration: OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' is not an OTLP protocol "
        "detektr can export with (use http/protobuf or grpc)")

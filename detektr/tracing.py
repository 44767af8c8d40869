"""Tracing with OpenTelemetry: setting it up in a process, from the standard `OTEL_*` variables alone.

With neither `OTEL_TRACES_EXPORTER` nor an OTLP endpoint set (`exporter_names`), nothing is set
up: no tracer provider, no instrumentation, and every span function of `detektr.frame_spans`
returns at once, so frames pay nothing for it. Otherwise `start` installs the SDK's tracer
provider, with a batch span processor per exporter, and instruments Celery
(opentelemetry-instrumentation-celery). Ingest starts it when it starts; a worker checks the
variables when it starts (a bad value stops it, exit status 2) and starts tracing in each pool
process, after the fork (the batch span processor exports from a thread of its own).

A pool process exports what it still holds when it ends (`shutdown`, on Celery's
`worker_process_shutdown`), also when Celery recycles it (`--max-tasks-per-child`), which
otherwise loses the spans of its last tasks (opentelemetry-python-contrib issue 4916). A process
killed outright (SIGKILL, out of memory) loses the spans it has not exported yet: at most
`OTEL_BSP_SCHEDULE_DELAY` (5 s) of them.

Which spans a frame gets, and how they connect, is in `detektr.frame_spans`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigError

log = logging.getLogger(__name__)

OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
"""The span exporter (its entry point's name) for each OTLP protocol."""

DEFAULT_OTLP_PROTOCOL = "http/protobuf"
"""The OTLP protocol when none is set: the specification's default, and the exporter detektr installs."""

EXPORTER_PACKAGES = {
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "zipkin": "opentelemetry-exporter-zipkin",
}
"""The package of an exporter that is not installed, for the message that says so."""

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

INGEST_SERVICE_NAME = "detektr-ingest"
WORKER_SERVICE_NAME = "detektr-worker"
"""The service names of ingest's and workers' spans, unless OTEL_SERVICE_NAME says otherwise."""


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the `OTEL_*` variables ask for, by entry-point name; [] when tracing is off.

    `OTEL_TRACES_EXPORTER` names them (`otlp`, `console`, ...; `none`: off); without it, an OTLP
    endpoint turns OTLP on. `otlp` becomes the exporter of `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`
    (`http/protobuf` when unset). `OTEL_SDK_DISABLED=true` turns everything off. Plain code, no I/O.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if not names:
        names = ["otlp"] if any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES) else []
    if "none" in names:
        return []
    chosen = []
    for name in names:
        if name == "otlp":
            variable = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" if environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        else "OTEL_EXPORTER_OTLP_PROTOCOL")
            protocol = environ.get(variable, "").strip() or DEFAULT_OTLP_PROTOCOL
            if protocol not in OTLP_EXPORTERS:
                raise ConfigError(f"{variable}: {protocol!r} is not an OTLP protocol detektr can export with "
                                  f"(use {' or '.join(OTLP_EXPORTERS)})")
            name = OTLP_EXPORTERS[protocol]
        if name not in chosen:
            chosen.append(name)
    return chosen


def exporter_classes(names: Sequence[str]) -> list[type]:
    """The span exporter classes of these entry-point names; ConfigError naming the package of one not installed."""
    classes = []
    for name in names:
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            package = EXPORTER_PACKAGES.get(name)
            asked = "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" if name == "otlp_proto_grpc" else f"OTEL_TRACES_EXPORTER={name}"
            raise ConfigError(f"{asked} needs " + (f"the package {package}, which is not installed (pip install "
                                                   f"{package}, or use the OTLP protocol http/protobuf)"
                                                   if package else "a span exporter of that name; none is installed"))
        try:
            classes.append(next(iter(found)).load())
        except Exception as exc:  # an exporter whose own dependencies are missing or broken
            raise ConfigError(f"span exporter {name} cannot be loaded: {type(exc).__name__}: {exc}") from None
    return classes


def check_environment() -> list[str]:
    """Check the `OTEL_*` variables (ConfigError if tracing cannot start); the exporters they ask for."""
    names = exporter_names(os.environ)
    exporter_classes(names)
    return names


class ProcessTracing:
    """This process's tracer, and the dispatch spans still open (by the `traceparent` their frames carry)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from . import __version__

        self.provider = provider
        self.tracer = provider.get_tracer("detektr", __version__)
        self.trace = trace
        self.context = context
        self.propagator = TraceContextTextMapPropagator()
        self.dispatching: dict[str, Any] = {}

    def parent(self, traceparent: str | None) -> Any:
        """The context a `traceparent` names (an empty one, for a new trace, without it)."""
        return self.propagator.extract({"traceparent": traceparent} if traceparent else {})

    def traceparent(self, span: Any) -> str | None:
        """The `traceparent` header of `span`."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, self.trace.set_span_in_context(span))
        return carrier.get("traceparent")

    def fail(self, span: Any, description: str, exc: BaseException | None = None) -> None:
        """Mark `span` as failed, with the exception when there is one."""
        from opentelemetry.trace import Status, StatusCode

        if exc is not None:
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, description))


_tracing: ProcessTracing | None = None


def active() -> ProcessTracing | None:
    """This process's tracing, when it records spans (`start` found exporters to send them to)."""
    return _tracing


def start(service_name: str) -> bool:
    """Set up tracing in this process from the `OTEL_*` variables, once; True when spans are recorded.

    `service_name` is the default of `OTEL_SERVICE_NAME`. Call it after any fork: the batch span
    processor exports from a thread of its own. ConfigError when the variables cannot work.
    """
    global _tracing
    if _tracing is not None:
        return True
    classes = exporter_classes(exporter_names(os.environ))
    if not classes:
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from . import __version__

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over these; the sampler, limits and the
    # batch processor's and exporters' settings are read from their OTEL_* variables by the SDK.
    resource = Resource.create({"process.pid": os.getpid(), "host.name": socket.gethostname(),
                                "service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name}))
    provider = TracerProvider(resource=resource)
    for exporter in classes:
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    _tracing = ProcessTracing(provider)
    log.info("spans of %s go to %s", resource.attributes["service.name"], ", ".join(c.__name__ for c in classes))
    return True


def start_worker_process() -> None:
    """Start tracing in a worker process that runs tasks (a pool process after the fork, or a threads or solo worker).

    The variables were checked when the worker started (`check_environment`); a problem found
    only now is logged, and the process runs on without tracing.
    """
    try:
        start(WORKER_SERVICE_NAME)
    except Exception:
        log.exception("tracing could not start in worker process %d", os.getpid())


def shutdown() -> None:
    """End what is open and export every span still waiting (a process going away: ingest, a pool process)."""
    global _tracing
    if _tracing is None:
        return
    for span in _tracing.dispatching.values():
        span.end()
    _tracing.dispatching.clear()
    _tracing.provider.shutdown()
    _tracing = None

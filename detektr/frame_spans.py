"""A frame's spans: one trace per frame, across ingest, Celery and the worker.

Every function here returns at once when this process does not trace (`detektr.tracing`).

- **Ingest**, per frame: `detektr.receive`, a child of the frame's `traceparent` (a new trace
  without one), with two kinds of children: `detektr.route` (the chosen processors) and one
  `detektr.dispatch` per task the frame goes into, from the moment it is held until its task is
  sent. The frame reference in the task carries the dispatch span's `traceparent`.
- **A task with one frame** is sent in that frame's context: Celery's `apply_async/<task>` span
  (opentelemetry-instrumentation-celery) is a child of the dispatch span, the worker's
  `run/<task>` span a child of that, and the frame's `detektr.process` span a child of `run/`.
- **A task with several frames** (under a backlog) can be in one trace only: it is sent under a
  `detektr.send` span that starts a trace of its own, linked to every frame's dispatch span, and
  its Celery spans are in that trace. Each frame's `detektr.process` span is a child of the
  frame's dispatch span (from its reference), linked to the task's `run/` span. So is each frame
  of a batched processor, whose batches do not follow tasks.
- **The result entry's `traceparent`** is the `detektr.process` span's: a consumer continues the
  frame's trace. A frame sent on after a gate is sent from there; a retry from the failed task
  (Celery's retry, within its `run/` span), or, for a batched processor, from the failed frame's span.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from . import tracing
from .tracing import ProcessTracing

# -- ingest ---------------------------------------------------------------------------------------


def receive(frame: Any, entry_id: str, start_ns: int) -> Any:
    """Start a frame's `detektr.receive` span (since `start_ns`, when its batch was read); None when not tracing."""
    t = tracing.active()
    if t is None:
        return None
    return t.tracer.start_span(
        "detektr.receive", context=t.parent(frame.traceparent), start_time=start_ns,
        attributes={"detektr.frame_id": frame.frame_id, "detektr.camera_id": frame.camera_id,
                    "detektr.entry_id": entry_id, "detektr.priority": frame.priority})


def end_receive(span: Any, routed: bool) -> None:
    """End a `detektr.receive` span; a frame that was not routed was dead-lettered (`frames:dead` says why)."""
    t = tracing.active()
    if span is None or t is None:
        return
    if not routed:
        t.fail(span, "dead-lettered")
    span.end()


class _Route:
    """The `detektr.route` span of one frame, while the router plans it."""

    def __init__(self, receive_span: Any) -> None:
        self.receive_span = receive_span
        self.span: Any = None

    def __enter__(self) -> _Route:
        t = tracing.active()
        if self.receive_span is not None and t is not None:
            self.span = t.tracer.start_span("detektr.route", context=t.trace.set_span_in_context(self.receive_span))
        return self

    def chose(self, plan: Any) -> None:
        """Record the router's plan: the processors and queues chosen, the capabilities nobody offers."""
        t = tracing.active()
        if self.span is None or t is None:
            return
        processors = [name for d in plan.destinations for name in (d.processor, *(f for f, _ in d.followers))]
        self.span.set_attribute("detektr.processors", processors)
        self.span.set_attribute("detektr.queues", [d.queue for d in plan.destinations])
        if plan.unavailable:
            self.span.set_attribute("detektr.unavailable", list(plan.unavailable))
            t.fail(self.span, f"no live processor for {', '.join(plan.unavailable)}")

    def __exit__(self, *exc: Any) -> None:
        if self.span is not None:
            self.span.end()


_NO_ROUTE = _Route(None)


def routing(receive_span: Any) -> _Route:
    """A context for routing one frame: its `detektr.route` span, a child of `receive_span` (nothing without one)."""
    return _NO_ROUTE if receive_span is None else _Route(receive_span)


def dispatch(receive_span: Any, processor: str, queue: str) -> str | None:
    """Start the `detektr.dispatch` span of a frame's task for `processor`; the `traceparent` its reference carries.

    The span stays open while the frame is held, and ends when its task is sent (`sending`).
    """
    t = tracing.active()
    if t is None or receive_span is None:
        return None
    span = t.tracer.start_span("detektr.dispatch", context=t.trace.set_span_in_context(receive_span),
                               attributes={"detektr.processor": processor, "detektr.queue": queue})
    traceparent = t.traceparent(span)
    if traceparent:
        t.dispatching[traceparent] = span
    return traceparent


def dispatch_skipped(payload: Mapping[str, Any]) -> None:
    """End the dispatch span of a held frame that a newer frame of its camera replaced (backpressure)."""
    t = tracing.active()
    if t is None:
        return
    span = t.dispatching.pop(payload.get("traceparent") or "", None)
    if span is not None:
        span.set_attribute("detektr.skipped", True)
        span.end()


# -- sending a task -------------------------------------------------------------------------------


@contextmanager
def _sending(t: ProcessTracing, processor: str, queue: str, payloads: Sequence[Mapping[str, Any]]) -> Iterator[None]:
    open_spans = [t.dispatching.pop(p.get("traceparent") or "", None) for p in payloads]
    send_span = None
    if len(payloads) == 1:
        parent = (t.trace.set_span_in_context(open_spans[0]) if open_spans[0] is not None
                  else t.parent(payloads[0]["traceparent"]) if payloads[0].get("traceparent")
                  else t.context.get_current())
    else:
        frames = [t.trace.get_current_span(t.parent(p.get("traceparent"))).get_span_context() for p in payloads]
        send_span = t.tracer.start_span(
            "detektr.send", links=[t.trace.Link(frame) for frame in frames if frame.is_valid],
            attributes={"detektr.processor": processor, "detektr.queue": queue, "detektr.frames": len(payloads)})
        parent = t.trace.set_span_in_context(send_span)
    ended = [span for span in (send_span, *open_spans) if span is not None]
    token = t.context.attach(parent)
    try:
        yield
    except BaseException as exc:
        for span in ended:
            t.fail(span, f"task not sent: {type(exc).__name__}", exc)
        raise
    finally:
        t.context.detach(token)
        for span in ended:
            span.set_attribute("detektr.task_frames", len(payloads))
            span.end()


def sending(processor: str, queue: str, payloads: Sequence[Mapping[str, Any]]) -> Any:
    """A context to send one task in: a one-frame task in its frame's trace, several frames under `detektr.send`.

    Ends the dispatch spans of the frames it sends.
    """
    t = tracing.active()
    return nullcontext() if t is None else _sending(t, processor, queue, payloads)


# -- the worker -----------------------------------------------------------------------------------


def _start_processing(t: ProcessTracing, processor: str, ref: Any) -> Any:
    """Start `ref`'s `detektr.process` span: a child of the current (Celery `run/`) span when that is in the
    frame's trace, else of the frame's `traceparent`, linked to the current span."""
    frame_context = t.parent(ref.traceparent)
    frame = t.trace.get_current_span(frame_context).get_span_context()
    current = t.trace.get_current_span().get_span_context()
    parent, links = None, []  # None: the current context
    if not (current.is_valid and (not frame.is_valid or current.trace_id == frame.trace_id)):
        parent = frame_context
        links = [t.trace.Link(current)] if current.is_valid else []
    return t.tracer.start_span(
        "detektr.process", context=parent, links=links,
        attributes={"detektr.processor": processor, "detektr.frame_id": ref.frame_id,
                    "detektr.camera_id": ref.camera_id, "detektr.attempt": ref.attempt})


def _traced(t: ProcessTracing, ref: Any, span: Any) -> Any:
    """`ref` carrying `span`'s `traceparent` from now on: to its result entry, a retry, the processors after a gate."""
    return ref.model_copy(update={"traceparent": t.traceparent(span)})


@contextmanager
def _processing(t: ProcessTracing, processor: str, ref: Any) -> Iterator[Any]:
    span = _start_processing(t, processor, ref)
    token = t.context.attach(t.trace.set_span_in_context(span))
    try:
        yield _traced(t, ref, span)
    except BaseException as exc:
        t.fail(span, getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}", exc)
        raise
    finally:
        t.context.detach(token)
        span.end()


def processing(processor: str, ref: Any) -> Any:
    """A context to run `processor` on one frame in: its `detektr.process` span, the current span meanwhile.

    Yields the frame reference, carrying the span's `traceparent` when tracing. An exception
    leaving it marks the span as failed (a `FrameRejected` with its reason).
    """
    t = tracing.active()
    return nullcontext(ref) if t is None else _processing(t, processor, ref)


@contextmanager
def _processing_batch(t: ProcessTracing, processor: str, refs: Sequence[Any]) -> Iterator[list[Any]]:
    spans = [_start_processing(t, processor, ref) for ref in refs]
    for span in spans:
        span.set_attribute("detektr.batch_frames", len(refs))
    try:
        yield [_traced(t, ref, span) for ref, span in zip(refs, spans)]
    except BaseException as exc:
        for span in spans:
            t.fail(span, f"{type(exc).__name__}: {exc}", exc)
        raise
    finally:
        for span in spans:
            span.end()


def processing_batch(processor: str, refs: Sequence[Any]) -> Any:
    """Like `processing`, for a batch of frames run in one call: a span per frame, none of them current."""
    t = tracing.active()
    return nullcontext(list(refs)) if t is None else _processing_batch(t, processor, refs)

"""The processor SDK: a plain Python function under `@processor` becomes a routed Celery task.

    @processor("face", capabilities=["face_detection"], capacity=4, result_stream="faces:detected")
    def detect_faces(frame: Frame) -> dict: ...

Options are keyword-only, held once in a frozen `ProcessorSpec`; unknown options and duplicate
names are rejected at import. The decorated object still calls the plain function when called,
and `.delay()` / `.apply_async()` reach the Celery task. This module is plain data: the Celery
binding (the task that runs a spec) lives in `detektr.tasks`, made when a worker starts or on
the first `.delay()`.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import keys
from .config import ProcessorSettings, RoutingStrategy
from .errors import ProcessorDefinitionError

_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
_ROUTING = ("round_robin", "least_loaded", "affinity")
_OPTIONS = (
    "capabilities", "capacity", "result_stream", "routing", "queue", "setup", "validate", "max_retries",
    "description", "batch_size", "batch_wait_ms", "gate", "gated_by", "requires_env", "requires_packages",
    "settings", "max_age_ms", "overload",
)

REGISTRY: dict[str, Processor] = {}
"""Every processor declared in this process, by name."""


@dataclass(frozen=True)
class ProcessorSpec:
    """A processor's declaration: everything the router, the registry and the worker need."""

    name: str
    fn: Callable[..., Any] = field(repr=False, compare=False)
    capabilities: tuple[str, ...]
    capacity: int = 1
    result_stream: str = ""
    routing: RoutingStrategy | None = None
    queue: str = ""
    setup: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    validate: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)
    max_retries: int | None = None
    description: str = ""
    batch_size: int | None = None
    batch_wait_ms: int = 50
    gate: Callable[[Any], bool] | None = field(default=None, repr=False, compare=False)
    gated_by: str | None = None
    requires_env: tuple[str, ...] = ()
    requires_packages: tuple[str, ...] = ()
    settings: type[ProcessorSettings] | None = field(default=None, repr=False, compare=False)
    max_age_ms: int | None = None
    overload: str = "shed"

    def missing_packages(self) -> list[str]:
        """The importable names of `requires_packages` that are not installed here (nothing is imported)."""
        return [name for name in self.requires_packages if importlib.util.find_spec(name) is None]

    def cannot_run_because(self, environ: Mapping[str, str] | None = None) -> str:
        """Why this process cannot run the processor ("" when it can): a missing package or setting."""
        packages = self.missing_packages()
        if packages:
            return f"needs the package {', '.join(packages)} (pip install {' '.join(packages)})"
        missing = self.missing_env(environ)
        if missing:
            return f"needs {', '.join(missing)} to be set"
        return ""

    def missing_env(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The variables of `requires_env` that are unset or empty: the processor cannot run without them."""
        environ = os.environ if environ is None else environ
        return [name for name in self.requires_env if not environ.get(name, "").strip()]

    @property
    def stateful(self) -> bool:
        """True when the function takes a second argument: its setup's result, or its settings."""
        return self.setup is not None or self.settings is not None

    def call(self, frames: Any, state: Any) -> Any:
        """Call the function on a frame (a list of frames when batched), with its state when it takes one."""
        return self.fn(frames, state) if self.stateful else self.fn(frames)

    @property
    def batched(self) -> bool:
        """True when the function takes a list of frames and returns a list of results."""
        return self.batch_size is not None

    @property
    def settings_prefix(self) -> str:
        """The environment prefix of its settings model ("" without one)."""
        return str(self.settings.model_config.get("env_prefix", "")) if self.settings is not None else ""

    @property
    def task_name(self) -> str:
        """The Celery task name."""
        return keys.task_name(self.name)

    def advertised(self) -> dict[str, Any]:
        """The JSON-ready part that workers publish in their heartbeats."""
        return {
            "name": self.name,
            "capabilities": list(self.capabilities),
            "capacity": self.capacity,
            "result_stream": self.result_stream,
            "routing": self.routing,
            "queue": self.queue,
            "batch_size": self.batch_size,
            "gate": self.gate is not None,
            "gated_by": self.gated_by,
            "overload": self.overload,
        }


class Processor:
    """A declared processor: calls the plain function, and exposes the Celery task."""

    def __init__(self, spec: ProcessorSpec) -> None:
        self.spec = spec
        self.__wrapped__ = spec.fn
        self.__doc__ = spec.fn.__doc__
        self.__name__ = getattr(spec.fn, "__name__", spec.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function (for tests and plain loops); no Celery, no Redis."""
        return self.spec.fn(*args, **kwargs)

    @property
    def task(self) -> Any:
        """The Celery task that runs this processor (bound to detektr's app on first use)."""
        from .tasks import bound_task  # the Celery binding, only where a task is wanted

        return bound_task(self.spec)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send a task to this processor's queue (a `FrameRef` dict as the argument)."""
        return self.task.apply_async(args, kwargs, queue=self.spec.queue)

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's apply_async, defaulting to this processor's queue."""
        kwargs.setdefault("queue", self.spec.queue)
        return self.task.apply_async(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Processor {self.spec.name} capabilities={list(self.spec.capabilities)}>"


def _check_options(name: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        hints = []
        for option in unknown:
            close = difflib.get_close_matches(option, _OPTIONS, n=1)
            hints.append(f"{option!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ProcessorDefinitionError(
            f"processor {name!r}: unknown option {', '.join(hints)}; known options: {', '.join(_OPTIONS)}"
        )


def build_spec(name: str, fn: Callable[..., Any], options: dict[str, Any]) -> ProcessorSpec:
    """Validate a declaration's options and return its spec (no registration, no Celery)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProcessorDefinitionError(
            f"processor name {name!r} must be lower-case letters, digits, '_' or '-', starting with a letter"
        )
    _check_options(name, options)
    capabilities = options.get("capabilities") or (name,)
    if isinstance(capabilities, str) or not isinstance(capabilities, Iterable):
        raise ProcessorDefinitionError(f"processor {name!r}: capabilities must be a list of names")
    capabilities = tuple(capabilities)
    capacity = options.get("capacity", 1)
    if not isinstance(capacity, int) or isinstance(capacity, bool) or not 1 <= capacity <= 1024:
        raise ProcessorDefinitionError(f"processor {name!r}: capacity must be an integer from 1 to 1024")
    routing = options.get("routing")
    if routing is not None and routing not in _ROUTING:
        raise ProcessorDefinitionError(f"processor {name!r}: routing must be one of {', '.join(_ROUTING)}")
    for hook in ("setup", "validate", "gate"):
        if options.get(hook) is not None and not callable(options[hook]):
            raise ProcessorDefinitionError(f"processor {name!r}: {hook} must be callable")
    max_retries = options.get("max_retries")
    if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
        raise ProcessorDefinitionError(f"processor {name!r}: max_retries must be a non-negative integer")
    batch_size = options.get("batch_size")
    if batch_size is not None and (not isinstance(batch_size, int) or not 1 <= batch_size <= 1024):
        raise ProcessorDefinitionError(f"processor {name!r}: batch_size must be an integer from 1 to 1024")
    batch_wait_ms = options.get("batch_wait_ms", 50)
    if not isinstance(batch_wait_ms, int) or not 1 <= batch_wait_ms <= 60_000:
        raise ProcessorDefinitionError(f"processor {name!r}: batch_wait_ms must be an integer from 1 to 60000")
    gated_by = options.get("gated_by")
    if gated_by is not None and (not isinstance(gated_by, str) or not _NAME.match(gated_by) or gated_by == name):
        raise ProcessorDefinitionError(f"processor {name!r}: gated_by must name another processor")
    requires_env = options.get("requires_env") or ()
    if isinstance(requires_env, str) or not all(isinstance(v, str) and v for v in requires_env):
        raise ProcessorDefinitionError(f"processor {name!r}: requires_env must be a list of variable names")
    requires_packages = options.get("requires_packages") or ()
    if isinstance(requires_packages, str) or not all(isinstance(v, str) and v for v in requires_packages):
        raise ProcessorDefinitionError(f"processor {name!r}: requires_packages must be a list of module names")
    max_age_ms = options.get("max_age_ms")
    if max_age_ms is not None and (not isinstance(max_age_ms, int) or isinstance(max_age_ms, bool) or max_age_ms < 0):
        raise ProcessorDefinitionError(f"processor {name!r}: max_age_ms must be a non-negative integer (0: none)")
    overload = options.get("overload", "shed")
    if overload not in ("shed", "pause"):
        raise ProcessorDefinitionError(f"processor {name!r}: overload must be 'shed' or 'pause'")
    settings = options.get("settings")
    if settings is not None and not (isinstance(settings, type) and issubclass(settings, ProcessorSettings)):
        raise ProcessorDefinitionError(f"processor {name!r}: settings must be a subclass of ProcessorSettings")
    return ProcessorSpec(
        name=name,
        fn=fn,
        capabilities=capabilities,
        capacity=capacity,
        result_stream=options.get("result_stream") or keys.default_result_stream(name),
        routing=routing,
        queue=options.get("queue") or name,
        setup=options.get("setup"),
        validate=options.get("validate"),
        max_retries=max_retries,
        description=options.get("description") or (fn.__doc__ or "").strip().split("\n")[0],
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        gate=options.get("gate"),
        gated_by=gated_by,
        requires_env=tuple(requires_env),
        requires_packages=tuple(requires_packages),
        settings=settings,
        max_age_ms=max_age_ms,
        overload=overload,
    )


def processor(name: str, **options: Any) -> Callable[[Callable[..., Any]], Processor]:
    """Declare a processor: `@processor("face", capabilities=[...], capacity=4, result_stream=...)`.

    Options: capabilities (default: [name]), capacity (suggested worker concurrency, default 1),
    result_stream (default `results:<name>`), routing (round_robin, least_loaded or affinity;
    default from DETEKTR_ROUTING), queue (default: name), setup (called once per worker process
    after the fork; its return value is passed to the function as a second argument),
    validate (called with the Frame; raise FrameRejected to dead-letter it), max_retries,
    batch_size and batch_wait_ms (the function takes a list of frames and returns one result
    per frame, in order; a batch is sent when full or when its wait expires), gate (a function of
    this processor's result: True lets the frame go on to the processors gated by this one),
    gated_by (the name of the processor whose gate this one waits for, e.g. "motion"),
    requires_env (environment variables it cannot run without: a worker lacking one does not
    serve the processor, and says why, instead of failing every frame), requires_packages
    (importable packages it cannot run without, e.g. ["torch"]; likewise), settings (a
    `ProcessorSettings` model of its own settings: validated in each worker process before it
    serves, and passed to `setup`, or to the function when there is no setup), max_age_ms (its
    frames' deadline since ingest, default DETEKTR_FRAMES__MAX_AGE_MS; 0: none; a frame past it
    is counted as expired, not processed), overload ("shed", the default: under backpressure
    it gets each camera's newest frame and the skipped ones are counted; "pause": ingest slows,
    then stops reading, so that it sees every frame).
    """

    def decorate(fn: Callable[..., Any]) -> Processor:
        spec = build_spec(name, fn, options)
        existing = REGISTRY.get(name)
        if existing is not None:
            same = (existing.spec.fn.__module__, existing.spec.fn.__qualname__) == (fn.__module__, fn.__qualname__)
            if not same:
                raise ProcessorDefinitionError(
                    f"processor {name!r} is declared twice: in {existing.spec.fn.__module__} and {fn.__module__}"
                )
        declared = Processor(spec)
        REGISTRY[name] = declared
        return declared

    return decorate


def declared_processors() -> dict[str, ProcessorSpec]:
    """The specs of every processor declared (imported) in this process."""
    return {name: declared.spec for name, declared in REGISTRY.items()}

"""Configuration: one validated settings model, loaded once at start-up, never at import.

Every field has a default, a description and bounds. Values come from the environment:
top-level fields as ``DETEKTR_<FIELD>`` (``REDIS_URL`` for the server), nested ones as
``DETEKTR_<GROUP>__<FIELD>``, for example ``DETEKTR_INGEST__BATCH_SIZE=128``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.types import SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import keys
from .errors import ConfigError, describe_errors

RoutingStrategy = Literal["round_robin", "least_loaded", "affinity"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestSettings(_Section):
    """How `detektr ingest` reads the input stream."""

    group: str = Field("detektr-ingest", min_length=1, description="Consumer group on the input stream.")
    batch_size: int = Field(64, ge=1, le=10_000, description="Entries read per XREADGROUP call.")
    block_ms: int = Field(500, ge=1, le=60_000, description="How long one read waits for new entries.")
    claim_idle_ms: int = Field(
        30_000, ge=100, le=86_400_000,
        description="Entries pending this long on another consumer are reclaimed (XAUTOCLAIM).",
    )
    claim_interval_s: float = Field(5.0, gt=0, le=3600, description="How often pending entries are checked.")
    registry_refresh_s: float = Field(
        0.5, gt=0, le=60, description="How often live processors and queue depths are re-read."
    )
    frames_per_task: int = Field(
        128, ge=1, le=256,
        description="Most frames one task carries when several frames for one queue are at hand "
        "(never fewer tasks than the queue's capacity); 1 sends every frame in a task of its own.",
    )
    keep_entries: bool = Field(
        False,
        description="Keep input-stream entries after their frames are done, for consumer groups of your own "
        "(the stream is then bounded by DETEKTR_INPUT_MAXLEN alone). By default ingest deletes each entry "
        "once its frame is settled, so the server holds only frames still owed work.",
    )
    keep_freed_mb: int = Field(
        64, ge=0, le=65536,
        description="Freed memory (MiB) ingest keeps for its next reads instead of handing it back to the kernel "
        "after every batch (glibc's malloc trim and mmap thresholds; 0: glibc's own defaults). A batch of inline "
        "frames is megabytes; handing it back cost 3 to 7 page faults per frame.",
    )
    max_hold_ms: int = Field(
        100, ge=0, le=10_000,
        description="While every worker process of a queue already has a task waiting, ingest holds that "
        "queue's new frames (up to frames_per_task per process) to send them in fuller tasks, for at most "
        "this long; 0 never holds. A frame held is no later than it would be: it waits instead of queueing.",
    )

    @model_validator(mode="after")
    def _hold_shorter_than_claim(self) -> "IngestSettings":
        if self.max_hold_ms >= self.claim_idle_ms:
            raise ValueError(f"max_hold_ms ({self.max_hold_ms}) must be shorter than claim_idle_ms "
                             f"({self.claim_idle_ms}): held entries would be reclaimed as abandoned")
        return self


class FrameLimits(_Section):
    """Limits on what comes in, and how long frame bytes are kept."""

    max_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest accepted encoded frame, in bytes.")
    max_width: int = Field(7680, ge=16, description="Widest accepted frame, in pixels.")
    max_height: int = Field(4320, ge=16, description="Tallest accepted frame, in pixels.")
    max_metadata_bytes: int = Field(16 * 1024, ge=2, description="Largest accepted `metadata` JSON, in bytes.")
    max_metadata_depth: int = Field(
        16, ge=1, le=64,
        description="Deepest accepted nesting of `metadata` (a flat object is 1): deeper data could not travel "
        "in a task.",
    )
    ttl_s: int = Field(
        300, ge=5, le=86_400,
        description="How long stored frame bytes live at most (they are deleted when the frame's last processor is "
        "done); a frame still queued after this is dead-lettered.",
    )
    max_age_ms: int = Field(
        5000, ge=0, le=86_400_000,
        description="A frame's deadline: one that waited longer than this since ingest accepted it is not processed "
        "but counted as expired (live video: a late answer is no answer). A processor may set its own "
        "(`max_age_ms=`); 0: no deadline.",
    )


class WorkerSettings(_Section):
    """How processors run inside Celery workers."""

    max_retries: int = Field(3, ge=0, le=100, description="Retries of a failing processor before dead-lettering.")
    retry_backoff_s: float = Field(0.5, ge=0, le=600, description="First retry delay; doubles on each retry.")
    retry_backoff_max_s: float = Field(30.0, ge=0, le=3600, description="Upper bound of the retry delay.")
    heartbeat_interval_s: float = Field(2.0, gt=0, le=300, description="How often workers publish a heartbeat.")
    heartbeat_ttl_s: float = Field(
        10.0, gt=0, le=3600, description="A worker with no heartbeat for this long counts as gone."
    )
    no_worker_s: float = Field(
        30.0, gt=0, le=86_400,
        description="Frames queued for a processor that has had no live worker for this long are dead-lettered "
        "with that reason (the processors check), instead of waiting for ever.",
    )
    held_stale_s: float = Field(
        10.0, gt=0, le=3600,
        description="Beat gives a message a worker took and has not acknowledged back to its queue when no live "
        "worker has vouched for it for this long (each live worker vouches for what it holds on every heartbeat): "
        "a killed worker's frames are back in work within about this plus DETEKTR_BEAT__INTERVAL_S. At least twice "
        "heartbeat_interval_s.",
    )
    opencv_threads: int = Field(
        0, ge=0, le=1024,
        description="OpenCV's threads in each worker process (0: OpenCV's default, one per core). Set 1 when "
        "several worker processes or other services share the cores: their parallel regions then stop "
        "waiting on each other.",
    )
    decode_ahead: int = Field(
        4, ge=0, le=64,
        description="Frames of a task a worker fetches and decodes in a helper thread while the processor runs on "
        "the one before (a batched processor: at least one batch ahead; 0: off), for processors whose work on "
        "a frame takes long enough for the overlap to pay (0.2 ms). Each waiting frame holds its decoded image "
        "in memory.",
    )
    keep_freed_mb: int = Field(
        256, ge=0, le=65536,
        description="Freed memory (MiB) each worker process keeps for its next frames instead of handing it back "
        "to the kernel after every task (glibc's malloc trim and mmap thresholds; 0: glibc's own defaults). "
        "Handing it back cost a 640x360 frame about 40 page faults and 10% of its decode time.",
    )

    @model_validator(mode="after")
    def _held_stale_after_heartbeats(self) -> "WorkerSettings":
        if self.held_stale_s < 2 * self.heartbeat_interval_s:
            raise ValueError(f"held_stale_s ({self.held_stale_s}) must be at least twice heartbeat_interval_s "
                             f"({self.heartbeat_interval_s}): live workers' messages would be given back and run twice")
        return self


class CelerySettings(_Section):
    """Celery's own behaviour, as detektr sets it (the rest of Celery's configuration is fixed)."""

    visibility_timeout_s: int = Field(
        300, ge=10, le=86_400,
        description="A task whose worker vanished (killed, machine lost) is delivered again after this long.",
    )
    prefetch_multiplier: int = Field(
        1, ge=1, le=256,
        description="Tasks each worker process reserves (Celery's worker_prefetch_multiplier); 2 lets a "
        "`--pool threads` worker fetch its next task while it works, at the price of holding one more task.",
    )
    task_events: bool = Field(
        False,
        description="Send Celery task events from the start, and task-sent events (Flower turns workers' task "
        "events on by itself when it starts).",
    )


class BeatSettings(_Section):
    """The periodic checks run by `celery -A detektr beat`."""

    interval_s: float = Field(5.0, gt=0, le=3600, description="Period of the workers check (heartbeats, failover).")
    processors_interval_s: float = Field(
        1.0, gt=0, le=3600, description="Period of the processors check (circuit breakers, backpressure levels)."
    )


class BackpressureSettings(_Section):
    """How full a processor's queue may get (see detektr.backpressure)."""

    limit_per_worker: int = Field(
        10, ge=1, le=100_000,
        description="Frames a processor may owe per worker process (held, queued or running); the levels low, "
        "high and critical are 60%, 80% and 95% of it.",
    )
    aging_s: float = Field(
        10.0, ge=0, le=86_400,
        description="A task of low priority that has waited this long is moved ahead of the urgent ones, so that "
        "urgent frames cannot keep it waiting for ever; 0: never.",
    )


class BreakerSettings(_Section):
    """The circuit breaker of every processor (see detektr.breaker)."""

    failure_threshold: int = Field(
        5, ge=1, le=1_000_000,
        description="Failed attempts without a success (retries included) that open a processor's breaker.",
    )
    recovery_s: float = Field(
        30.0, gt=0, le=86_400, description="How long a breaker stays open before frames flow again on trial."
    )
    success_threshold: int = Field(
        3, ge=1, le=1_000_000, description="Frames processed on trial that close the breaker again."
    )


class ResultSettings(_Section):
    """Result and dead-letter streams."""

    stream_maxlen: int = Field(
        100_000, ge=100, description="Approximate bound (MAXLEN ~) of every result and dead-letter stream."
    )
    dedupe_ttl_s: int = Field(
        3600, ge=10, description="How long a published result blocks a duplicate for the same frame and processor."
    )


class MetricsSettings(_Section):
    """Prometheus `/metrics` of the processes that measure: workers and ingest (docs/metrics.md)."""

    port: int = Field(0, ge=0, le=65_535, description="Port of this process's own /metrics (0: none).")
    host: str = Field("0.0.0.0", min_length=1, description="Address that /metrics listens on.")


class ApiSettings(_Section):
    """`detektr api`: the control API and the cluster-wide /metrics."""

    host: str = Field("127.0.0.1", min_length=1, description="Address the API listens on.")
    port: int = Field(8080, ge=1, le=65_535, description="Port the API listens on.")
    protect_reads: bool = Field(False, description="Reads need the token too (/health and /docs stay open).")


class Settings(BaseSettings):
    """The root settings model."""

    model_config = SettingsConfigDict(
        env_prefix="DETEKTR_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "DETEKTR_REDIS_URL"),
        description="The one Redis-compatible server: Celery broker, streams and state.",
    )
    input_stream: str = Field(
        keys.DEFAULT_INPUT_STREAM, min_length=1, description="Stream that cameras append frames to."
    )
    input_maxlen: int = Field(
        10_000, ge=10, description="Approximate bound (MAXLEN ~) that detektr's own producers keep the input stream at."
    )
    routing: RoutingStrategy = Field("least_loaded", description="Default routing strategy.")
    processors: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra modules (comma-separated import paths) that define processors.",
    )
    gates: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Gating overrides, 'face=motion,objects=motion' ('face=none' turns a declared gate off).",
    )
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    frames: FrameLimits = Field(default_factory=FrameLimits)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    beat: BeatSettings = Field(default_factory=BeatSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    backpressure: BackpressureSettings = Field(default_factory=BackpressureSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    api_token: SecretStr | None = Field(None, description="Bearer token of the API's mutations; none: refused.")

    @model_validator(mode="after")
    def _markers_outlive_redelivery(self) -> "Settings":
        if self.results.dedupe_ttl_s < self.celery.visibility_timeout_s:
            raise ValueError(
                f"DETEKTR_RESULTS__DEDUPE_TTL_S ({self.results.dedupe_ttl_s}) must be at least "
                f"DETEKTR_CELERY__VISIBILITY_TIMEOUT_S ({self.celery.visibility_timeout_s}): a lost worker's task, "
                "delivered again after that long, would find its frames' markers gone and publish them twice")
        return self

    @field_validator("processors", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("gates", mode="before")
    @classmethod
    def _split_gates(cls, value: object) -> object:
        if isinstance(value, str):
            gates = {}
            for part in filter(None, (p.strip() for p in value.split(","))):
                processor, sep, gate = part.partition("=")
                if not sep or not processor.strip() or not gate.strip():
                    raise ValueError(f"gate {part!r} is not 'processor=gating_processor'")
                gates[processor.strip()] = gate.strip()
            return gates
        return value


def setting_name(location: tuple[int | str, ...]) -> str:
    """The environment variable behind a settings field: ("ingest", "max_hold_ms") -> DETEKTR_INGEST__MAX_HOLD_MS."""
    if tuple(location[:1]) == ("redis_url",):
        return "REDIS_URL"
    return "DETEKTR_" + "__".join(str(part).upper() for part in location) if location else "settings"


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment (and keyword overrides) and validate them.

    Raises ConfigError naming each bad variable and what is wrong with it, never its value (a
    REDIS_URL carries a password).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, setting_name)) from None


class ProcessorSettings(BaseSettings):
    """Base of a processor's own settings: subclass it with an `env_prefix` and bounded, described fields.

        class FaceSettings(ProcessorSettings):
            model_config = SettingsConfigDict(env_prefix="DETEKTR_FACE_")
            score_min: float = Field(0.5, ge=0, le=1, description="Faces scoring below this are dropped.")

    Declare it with `@processor(..., settings=FaceSettings)`: each worker process validates it
    before serving, and passes the instance to the processor's `setup`. A variable set but empty
    means the default.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True, env_ignore_empty=True)


def settings_variables(model: type[BaseModel], prefix: str, nested: str = "__") -> dict[str, str]:
    """Every environment variable a settings model reads, with its description: {name: description}."""
    variables = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            variables.update(settings_variables(annotation, f"{prefix}{name.upper()}{nested}", nested))
        else:
            variables[f"{prefix}{name.upper()}"] = info.description or ""
    return variables


def core_variables() -> dict[str, str]:
    """Every variable of the root `Settings` model (REDIS_URL and DETEKTR_*), with its description."""
    variables = settings_variables(Settings, "DETEKTR_")
    variables["REDIS_URL"] = variables["DETEKTR_REDIS_URL"]
    return variables


def processor_settings_error(model: type[ProcessorSettings], error: ValidationError) -> ConfigError:
    """A processor's settings that fail validation, as one ConfigError naming each variable (never its value)."""
    prefix = str(model.model_config.get("env_prefix", ""))
    return ConfigError(describe_errors(error, lambda location: prefix + "_".join(map(str, location)).upper()))


def load_processor_settings(model: type[ProcessorSettings]) -> ProcessorSettings:
    """Read a processor's settings from the environment; ConfigError naming each bad variable."""
    try:
        return model()
    except ValidationError as exc:
        raise processor_settings_error(model, exc) from None


def unknown_variables(environ: Mapping[str, str], known: Iterable[str], known_prefixes: Iterable[str] = (),
                      only_near_known: bool = False) -> list[str]:
    """The `DETEKTR_*` variables in `environ` that no setting reads, each with a hint where one is close.

    `known_prefixes` belong to something else that reads them (a processor's settings). With
    `only_near_known` (a process that has not loaded the processors, so cannot know all of theirs),
    only variables close to a known name or inside a known section are reported: a typo of a core
    setting, never a processor's setting this process does not know.
    """
    known = set(known)
    prefixes = tuple(known_prefixes)
    sections = tuple({name.rsplit("__", 1)[0] + "__" for name in known if "__" in name})
    reports = []
    for name in sorted(environ):
        if not name.startswith("DETEKTR_") or name in known or name.startswith(prefixes):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if only_near_known and not close and not name.startswith(sections):
            continue
        reports.append(f"{name} is not a detektr setting" + (f" (did you mean {close[0]}?)" if close else ""))
    return reports

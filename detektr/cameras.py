"""Camera configuration for `detektr capture`: one validated model, loaded from YAML or built from options.

    cameras:
      - id: door
        source: rtsp://viewer:${DOOR_PASSWORD}@10.0.0.5/stream1
        fps: 5
        width: 640
        capabilities: [motion_detection, face_detection]
        priority: 5
      - id: lobby-replay
        source: /srv/video/lobby.mp4
    watchdog:
      no_frame_timeout_s: 10

Every field has a default, a description and bounds; unknown fields are refused. Sources may name
environment variables as `${NAME}`, so that passwords need not live in the file. Error messages
never quote a source, because a source may hold credentials.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, describe_errors
from .frame import _CAPABILITY, _ID_PATTERN  # the input-stream contract's own patterns

SourceKind = Literal["synthetic", "device", "url", "file"]

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
"""URL schemes that `capture` hands to OpenCV's FFMPEG backend."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_DEVICE_PATH = re.compile(r"^/dev/video(\d+)$")


def source_kind(source: str) -> SourceKind:
    """What a source string names: `synthetic`, a device (index or /dev/videoN), a URL or a file path."""
    if source == "synthetic":
        return "synthetic"
    if source.isdigit() or _DEVICE_PATH.match(source):
        return "device"
    if _SCHEME.match(source):
        return "url"
    return "file"


def device_index(source: str) -> int:
    """The V4L2 index of a device source (`0` or `/dev/video0`)."""
    match = _DEVICE_PATH.match(source)
    return int(match.group(1) if match else source)


def expand_env(source: str, environ: dict[str, str] | None = None) -> str:
    """Replace `${NAME}` with the environment variable NAME; a variable that is not set is an error."""
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ValueError(f"source refers to ${{{name}}}, which is not set in the environment")
        return env[name]

    return _ENV_REF.sub(value, source)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Section):
    """One camera: where its frames come from and how they are sent on."""

    id: str = Field(min_length=1, max_length=128, pattern=_ID_PATTERN, description="Camera id (`camera_id` of frames).")
    source: str = Field(
        min_length=1, repr=False,
        description="`rtsp://user:pass@host/path` (or another URL), a video file path, a device index or "
                    "/dev/videoN, or `synthetic`.",
    )
    fps: float | None = Field(
        None, gt=0, le=1000,
        description="Most frames/s sent on; none: the source's own rate (synthetic: 15; files: as fast as taken).",
    )
    width: int | None = Field(None, ge=16, le=7680, description="Resize to this width (keeps the aspect ratio "
                                                                 "unless height is given too).")
    height: int | None = Field(None, ge=16, le=4320, description="Resize to this height.")
    quality: int = Field(80, ge=1, le=100, description="JPEG quality.")
    capabilities: tuple[str, ...] | None = Field(
        None, description="Capabilities to ask for; none: every capability a live processor offers."
    )
    priority: int = Field(0, ge=0, le=9, description="Frame priority, 9 most urgent.")
    live: bool | None = Field(
        None,
        description="Live sources keep the newest frame and skip stale ones; none: files are not live, "
                    "everything else is. A live file plays at its own frame rate.",
    )
    loop: bool = Field(False, description="Start a file again from the beginning when it ends.")
    max_queued: int | None = Field(
        None, ge=1, le=10_000,
        description="Frames of this camera allowed to wait for ingest: a live camera drops the oldest beyond "
                    "it (default 1), a file waits (default 64).",
    )

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            value = expand_env(value.strip())
            match = _SCHEME.match(value)
            if match and match.group(1).lower() not in URL_SCHEMES:
                raise ValueError(f"URL scheme {match.group(1)!r} is not one of {', '.join(URL_SCHEMES)}")
        return value

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capabilities(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            bad = [name for name in value if not isinstance(name, str) or not _CAPABILITY.match(name)]
            if bad:
                raise ValueError(f"invalid capability names: {bad}")
            return tuple(value) or None
        return value

    @property
    def kind(self) -> SourceKind:
        """What the source names."""
        return source_kind(self.source)

    @property
    def is_live(self) -> bool:
        """Whether stale frames are skipped (explicit `live`, else everything but files)."""
        return self.live if self.live is not None else self.kind != "file"

    @property
    def queue_limit(self) -> int:
        """Frames of this camera allowed to wait for ingest."""
        if self.max_queued is not None:
            return self.max_queued
        return 1 if self.is_live else 64


class WatchdogConfig(_Section):
    """When a source counts as broken, and how reconnecting backs off."""

    no_frame_timeout_s: float = Field(
        10.0, ge=0.5, le=3600, description="A source that errors, or delivers no frame for this long, is reconnected."
    )
    backoff_initial_s: float = Field(1.0, gt=0, le=600, description="First wait before reconnecting; doubles.")
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between reconnection attempts.")
    state_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often each camera's state is written to Redis."
    )


class CaptureConfig(_Section):
    """The root model of a cameras file."""

    cameras: list[CameraConfig] = Field(min_length=1, max_length=1000, description="The cameras to capture.")
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)

    @model_validator(mode="after")
    def _unique_ids(self) -> CaptureConfig:
        seen: set[str] = set()
        duplicates = sorted({c.id for c in self.cameras if c.id in seen or seen.add(c.id)})
        if duplicates:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(duplicates)}")
        return self


def build_config(data: Any) -> CaptureConfig:
    """Validate a cameras configuration (already parsed); raise ConfigError with readable reasons."""
    try:
        return CaptureConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def load_cameras(path: str | Path) -> CaptureConfig:
    """Read and validate a YAML cameras file; raise ConfigError (file, syntax or field problems)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a `cameras` list")
    try:
        return build_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def single_camera(camera: dict[str, Any], watchdog: dict[str, Any] | None = None) -> CaptureConfig:
    """A configuration of one camera from command-line options (None values left at their defaults)."""
    fields = {name: value for name, value in camera.items() if value is not None}
    checks = {name: value for name, value in (watchdog or {}).items() if value is not None}
    return build_config({"cameras": [fields], "watchdog": checks})

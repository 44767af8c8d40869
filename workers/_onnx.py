"""onnxruntime sessions for the ONNX processors (`objects`, `onnx`): provider, threads, shipped model files.

Not a processor module (the leading underscore keeps discovery away from it). onnxruntime is
imported only when a session is made, in the worker process that runs the processor (a
processor's `setup` runs after the fork: one session per worker process, never shared across a
fork). OnnxRuntimeSettings is read when a session is made.

The provider: CUDA (`CUDAExecutionProvider`, present with the `onnxruntime-gpu` wheel) when
onnxruntime offers it, else the CPU; DETEKTR_ONNXRUNTIME_PROVIDER=cpu or cuda forces one (cuda
fails the setup, with the reason, where CUDA cannot be used).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import ProcessorSettings
from detektr.config import load_processor_settings

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class OnnxRuntimeSettings(ProcessorSettings):
    """onnxruntime's own settings in each worker process that runs an ONNX processor: DETEKTR_ONNXRUNTIME_*."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_ONNXRUNTIME_")

    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where ONNX models run: auto (CUDA when onnxruntime offers it, i.e. with the "
        "onnxruntime-gpu wheel, else the CPU), cpu, or cuda (the setup fails where CUDA cannot be used).",
    )
    threads: int = Field(
        0, ge=0, le=1024,
        description="onnxruntime's intra-op CPU threads per session, in each worker process (0: onnxruntime's "
        "default, one per physical core). With several worker processes per machine, 1 or 2 keeps them from "
        "fighting over the cores.",
    )


class OnnxSetupError(RuntimeError):
    """An ONNX model file is missing or does not load, or the asked-for provider cannot be used."""


@dataclass(frozen=True)
class OnnxModel:
    """One loaded model: its session, the provider it runs on, and its first input's name and shape."""

    session: Any
    provider: str
    input_name: str
    input_shape: tuple[int | str | None, ...]
    """Each dimension an int when fixed, else the model's symbolic name for it (or None)."""

    def run(self, batch: Any) -> list[Any]:
        """Every output of the model for one input batch (a float32 NCHW or NHWC array), in the model's order."""
        return self.session.run(None, {self.input_name: batch})

    def output_shapes(self) -> list[tuple[int | str | None, ...]]:
        """The declared shape of each output (symbolic dimensions as names or None)."""
        return [tuple(output.shape) for output in self.session.get_outputs()]

    def metadata(self) -> dict[str, str]:
        """The model's custom metadata (e.g. `names`, as YOLO exports write it)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)


def shipped_model(name: str) -> Path:
    """The path of a model file shipped inside the package (`detektr/models/<name>`)."""
    path = Path(str(resources.files("detektr").joinpath("models", name)))
    if not path.is_file():
        raise OnnxSetupError(f"the shipped model {name} is missing from {path.parent} (a broken install?)")
    return path


def providers(wanted: str, available: list[str]) -> list[str]:
    """The execution providers to ask for, best first: CUDA then CPU, or the CPU alone."""
    if wanted == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if wanted == "cuda":
        raise OnnxSetupError(
            "DETEKTR_ONNXRUNTIME_PROVIDER=cuda but onnxruntime offers no CUDAExecutionProvider here "
            f"(it offers {', '.join(available)}): install onnxruntime-gpu instead of onnxruntime"
        )
    return [CPU]


def load_session(path: Path, settings: OnnxRuntimeSettings | None = None) -> OnnxModel:
    """An onnxruntime session for the model at `path`, on the provider the settings ask for.

    `settings` default to OnnxRuntimeSettings read from the environment (ConfigError naming a bad variable).
    """
    import onnxruntime

    settings = settings or load_processor_settings(OnnxRuntimeSettings)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: a worker shares its cores with decoding, ingest and other
    # workers; spinning cost NanoDet about a third of its frames/s on a busy 2-core machine (bench/results.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: onnxruntime warns about every unused initializer
    asked = providers(settings.provider, onnxruntime.get_available_providers())
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=asked)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile errors
        raise OnnxSetupError(f"{path} does not load as an ONNX model: {exc}") from exc
    provider = session.get_providers()[0]
    if settings.provider == "cuda" and provider != CUDA:
        raise OnnxSetupError(
            f"DETEKTR_ONNXRUNTIME_PROVIDER=cuda but the session for {path.name} fell back to {provider} "
            "(are CUDA and cuDNN libraries for onnxruntime-gpu installed?)"
        )
    first = session.get_inputs()[0]
    return OnnxModel(session, provider, first.name, tuple(first.shape))

"""detektr: an open frame orchestrator for camera AI.

Cameras append frames to a Redis Stream; `detektr ingest` routes them as Celery tasks to
per-processor queues; processors are plain functions under `@processor`; their results go to
Redis Streams. `celery -A detektr worker -Q <processor>` runs a worker pool.
"""

from __future__ import annotations

from typing import Any

from .config import ProcessorSettings
from .errors import FrameRejected
from .frame import Frame
from .processor import processor

__all__ = ["Frame", "FrameRejected", "ProcessorSettings", "app", "processor"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`detektr.app`, the Celery app, is built on first use (`celery -A detektr` asks for it)."""
    if name == "app":
        from .celery_app import app

        return app
    raise AttributeError(f"module 'detektr' has no attribute {name!r}")

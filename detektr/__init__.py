"""detektr: an open frame orchestrator for camera AI.

Cameras append frames to a Redis Stream; `detektr ingest` routes them as Celery tasks to
per-processor queues; processors are plain functions under `@processor`; their results go to
Redis Streams. `celery -A detektr worker -Q <processor>` runs a worker pool.
"""

from .celery_app import app
from .errors import FrameRejected
from .frame import Frame
from .processor import processor

__all__ = ["Frame", "FrameRejected", "app", "processor"]
__version__ = "0.1.0"

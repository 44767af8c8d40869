"""The Celery application: `celery -A detektr worker -Q <processor> -c <capacity>`.

Built when first asked for (`celery -A detektr` finds it as `detektr.app`), never by a plain
`import detektr`. Its configuration comes from the validated `Settings`
(`detektr.celeryconfig`), so broker, streams and state are always on the same server.
"""

from __future__ import annotations

import sys

from celery import Celery

from . import worker_hooks
from .celeryconfig import celery_config
from .config import Settings, load_settings
from .errors import ConfigError


def build_app(settings: Settings) -> Celery:
    """A Celery app configured from `settings`, with detektr's worker behaviour installed."""
    celery = Celery("detektr", set_as_current=False)
    celery.config_from_object(celery_config(settings))
    worker_hooks.install(celery)
    return celery


def _settings_or_exit() -> Settings:
    """The settings, or one line naming the bad variables and exit code 2 (`celery -A detektr` starts here)."""
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"detektr: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


app = build_app(_settings_or_exit())

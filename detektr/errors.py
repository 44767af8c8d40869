"""detektr's own exceptions; each carries a reason a person can read (and the dead-letter stream keeps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class DetektrError(Exception):
    """Base class of detektr's own errors."""


class FrameRejected(DetektrError):
    """A frame that cannot be processed; it goes to `frames:dead` with this reason, never retried.

    Raise it from a processor or its validator when the input is unusable.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProcessorFailed(DetektrError):
    """Raised at the end of a task whose frames were dead-lettered after their last attempt.

    Their dead letters are written by then; raising makes Celery and Flower show the task as failed.
    """


class ProcessorDefinitionError(DetektrError):
    """A `@processor` declaration that is invalid (unknown option, duplicate name, bad value)."""


class UsageError(DetektrError):
    """A command used in a way that cannot work (an unknown processor, a missing option); the message says how."""


class ConfigError(DetektrError, ValueError):
    """Settings or a cameras file that cannot be used; the message names each problem, never its value."""


def _dotted(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "config"


def describe_errors(error: ValidationError, name: Callable[[tuple[int | str, ...]], str] = _dotted) -> str:
    """One part per problem, `name(location): message`, never quoting the offending value."""
    return "; ".join(f"{name(item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
                     for item in error.errors(include_url=False, include_input=False))

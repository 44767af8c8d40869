"""detektr's own exceptions; each carries a reason a person can read (and the dead-letter stream keeps)."""

from __future__ import annotations


class DetektrError(Exception):
    """Base class of detektr's own errors."""


class FrameRejected(DetektrError):
    """A frame that cannot be processed; it goes to `frames:dead` with this reason, never retried.

    Raise it from a processor or its validator when the input is unusable.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProcessorDefinitionError(DetektrError):
    """A `@processor` declaration that is invalid (unknown option, duplicate name, bad value)."""


class ConfigError(DetektrError, ValueError):
    """Settings or a cameras file that cannot be used; the message names each problem, never its value."""

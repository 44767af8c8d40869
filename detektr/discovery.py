"""Find processor modules: every module of `detektr.workers` (the repository's `workers/`), plus the user's own."""

from __future__ import annotations

import importlib
import pkgutil

BUILTIN_PACKAGE = "detektr.workers"


def builtin_modules() -> list[str]:
    """Import paths of the modules in the `workers` package (without importing them)."""
    try:
        package = importlib.import_module(BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        return []
    return sorted(
        f"{BUILTIN_PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    )


def processor_modules(user_modules: str | list[str] = "") -> list[str]:
    """Builtin processor modules followed by the user's (comma-separated or a list), without repeats."""
    if isinstance(user_modules, str):
        user_modules = [part.strip() for part in user_modules.split(",") if part.strip()]
    ordered: list[str] = []
    for name in [*builtin_modules(), *user_modules]:
        if name not in ordered:
            ordered.append(name)
    return ordered


def import_processors(user_modules: str | list[str] = "") -> list[str]:
    """Import every processor module so that its `@processor` declarations register; return their names."""
    names = processor_modules(user_modules)
    for name in names:
        importlib.import_module(name)
    return names

"""The compose stack's files as the tests read them: the compose file, with compose's variable interpolation."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import REPO

COMPOSE_PATH = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "detektr.json"

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(ValueError):
    """A `${NAME:?message}` whose variable is not set: compose refuses to start."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """`value` with compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` replaced from `env`."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if operator in (":?", "?") and not current:
            raise MissingVariable(f"{name}: {argument}")
        if operator in (":-", "-") and not current:
            return argument
        return current or ""

    return _VARIABLE.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def interpolate_all(node: Any, env: dict[str, str]) -> Any:
    """Every string of a parsed YAML tree interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_all(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_all(value, env) for key, value in node.items()}
    return node


def variables_used(text: str) -> dict[str, str]:
    """Every `${NAME...}` of a text: {name: operator} (":?" for required ones)."""
    return {match.group(1): match.group(2) or "" for match in _VARIABLE.finditer(text)}


def env_example() -> dict[str, str]:
    """The variables .env.example sets, with its values."""
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


RAW = yaml.safe_load(COMPOSE_PATH.read_text())
FILLED_ENV = {**{name: value or f"secret{i}" for i, (name, value) in enumerate(env_example().items())},
              "FLOWER_BASIC_AUTH": "admin:secret"}
"""What a user's .env holds: .env.example with its blanks (the passwords) filled in."""
COMPOSE = interpolate_all(RAW, FILLED_ENV)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DETEKTR_SERVICES = {name: s for name, s in SERVICES.items() if s.get("image") == "detektr:local"}

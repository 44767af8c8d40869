"""docker compose cannot run here, so check what docker-compose.yml refers to."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from detektr.cli import build_parser
from detektr.discovery import import_processors
from detektr.processor import declared_processors

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
DETEKTR_SERVICES = {name: s for name, s in COMPOSE["services"].items() if s.get("image") == "detektr:local"}


def test_compose_builds_from_a_dockerfile_that_copies_what_exists():
    build = COMPOSE["x-detektr"]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    assert dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"


@pytest.mark.parametrize("name", sorted(DETEKTR_SERVICES))
def test_every_detektr_service_runs_a_real_command_against_the_compose_redis(name):
    service = DETEKTR_SERVICES[name]
    assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert "redis" in service["depends_on"]
    command = service["command"]
    if command[0] == "detektr":
        build_parser().parse_args(command[1:])  # exits on an unknown subcommand or option
    else:
        assert command[:3] == ["celery", "-A", "detektr"]
        assert command[3] in {"worker", "beat", "flower"}


def test_worker_services_consume_queues_of_declared_processors():
    import_processors()
    queues = {spec.queue for spec in declared_processors().values()} | {"maintenance"}
    for service in DETEKTR_SERVICES.values():
        command = service["command"]
        if command[3:4] == ["worker"]:
            assert command[command.index("-Q") + 1] in queues, command

"""docker compose cannot run here, so check that docker-compose.yml refers to things that exist and work."""

from __future__ import annotations

import fnmatch
import shlex
import sys
from pathlib import Path

import pytest

from detektr.cameras import load_cameras
from detektr.cli import build_parser
from detektr.config import core_variables, settings_variables, unknown_variables
from detektr.discovery import import_processors
from detektr.healthcheck import CHECKS
from detektr.processor import declared_processors
from detektr.worker_hooks import all_settings_models
from tests.conftest import REPO
from tests.deploy.stack import (
    COMPOSE,
    COMPOSE_PATH,
    DETEKTR_SERVICES,
    FILLED_ENV,
    RAW,
    SERVICES,
    MissingVariable,
    env_example,
    interpolate_all,
    variables_used,
)

WORKERS = {name: s for name, s in DETEKTR_SERVICES.items() if s["command"][3:4] == ["worker"]}


@pytest.fixture(scope="module")
def processors() -> dict:
    """Every processor a worker of the stack can serve: the shipped ones and the example in ./processors."""
    sys.path.insert(0, str(REPO / "processors"))
    try:
        import_processors(FILLED_ENV.get("CUSTOM_QUEUES", ""))
    finally:
        sys.path.remove(str(REPO / "processors"))
    return declared_processors()


def test_every_service_has_an_image_pinned_by_version_or_the_detektr_build():
    for name, service in SERVICES.items():
        image = service["image"]
        if "build" in service:
            assert image == "detektr:local", name
            continue
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest" and any(c.isdigit() for c in tag), f"{name}: {image} is not pinned"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_restarts_and_has_a_healthcheck(name):
    service = SERVICES[name]
    assert service["restart"] == "unless-stopped"
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, test
    assert "command" not in service or isinstance(service["command"], list), "commands are lists"


def in_build_context(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns leave `path` in the build context (the last matching pattern wins)."""
    parts = Path(path).parts
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            included = negated
    return included


def test_the_detektr_image_builds_from_a_dockerfile_that_copies_what_exists():
    build = COMPOSE["x-detektr"]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied += shlex.split(line)[1:-1]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
        assert in_build_context(source, patterns), f".dockerignore leaves {source} out of the build context"
    kept_out_files = (".venv/bin/python", "tests/conftest.py", "bench/results.md", ".git/HEAD", "detektr/x.pyc")
    for kept_out in kept_out_files:
        assert not in_build_context(kept_out, patterns), f"{kept_out} would go into the image's build context"


def test_the_image_installs_a_pinned_cpu_torch_by_default():
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cpu" in text
    assert '"https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==2.13.0"' in text
    assert "USER detektr" in text
    assert COMPOSE["x-detektr"]["build"]["args"]["TORCH_VARIANT"] == "cpu"


@pytest.mark.parametrize("name", sorted(DETEKTR_SERVICES))
def test_every_detektr_service_runs_a_real_command_against_the_compose_server(name):
    service = DETEKTR_SERVICES[name]
    assert service["environment"]["REDIS_URL"] == f"redis://:{FILLED_ENV['DETEKTR_REDIS_PASSWORD']}@redis:6379/0"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    command = service["command"]
    if command[0] == "detektr":
        build_parser().parse_args(command[1:])  # exits on an unknown subcommand or option
    else:
        assert command[:3] == ["celery", "-A", "detektr"]
        assert command[3] in {"worker", "beat", "flower"}


def test_one_worker_service_per_shipped_processor_each_on_a_declared_queue(processors):
    served = {}
    for name, service in WORKERS.items():
        command = service["command"]
        assert "-n" not in command, f"{name}: a fixed -n name breaks --scale (workers name themselves)"
        queue, concurrency = command[command.index("-Q") + 1], int(command[command.index("-c") + 1])
        assert concurrency >= 1
        if queue == "maintenance":
            continue
        spec = processors[queue]
        assert spec.queue == queue, name
        if spec.routing == "affinity":
            assert command[command.index("--pool") + 1] == "threads", f"{name}: affinity needs one process, threads"
        served[queue] = name
    shipped = {spec.queue for spec in processors.values() if spec.fn.__module__.startswith("detektr.workers.")}
    assert len(shipped) >= 6
    assert shipped <= set(served), f"no worker service for {shipped - set(served)}"
    assert "maintenance" in [s["command"][s["command"].index("-Q") + 1] for s in WORKERS.values()]
    assert sum(s["command"][3:4] == ["beat"] for s in DETEKTR_SERVICES.values()) == 1


def test_workers_that_need_something_of_the_user_are_behind_profiles(processors):
    """A processor that needs a setting (a model file) and the user's own processors start only when asked for."""
    optional = set()
    for name, service in WORKERS.items():
        queue = service["command"][service["command"].index("-Q") + 1]
        if name == "worker-custom" or (queue in processors and processors[queue].requires_env):
            optional.add(name)
            assert RAW["services"][name]["profiles"] == [queue if name != "worker-custom" else "custom"], name
            for variable in (processors[queue].requires_env if queue in processors else ()):
                assert service["environment"][variable], f"{name} sets {variable}"
    assert {"worker-model", "worker-custom"} <= optional
    assert all("profiles" not in s for n, s in RAW["services"].items() if n not in optional)


@pytest.mark.parametrize("name", sorted(DETEKTR_SERVICES))
def test_every_detektr_variable_of_a_service_is_a_known_setting(name, processors):
    known = set(core_variables())
    for model in all_settings_models():
        known |= set(settings_variables(model, str(model.model_config.get("env_prefix", "")), "_"))
    known |= {variable for spec in processors.values() for variable in spec.requires_env}
    environment = DETEKTR_SERVICES[name]["environment"]
    assert unknown_variables(environment, known) == []


def test_every_variable_the_compose_file_uses_is_in_env_example_and_passwords_are_required():
    used = variables_used(COMPOSE_PATH.read_text())
    example = env_example()
    assert set(used) <= set(example), f"not in .env.example: {set(used) - set(example)}"
    for secret in ("DETEKTR_REDIS_PASSWORD", "DETEKTR_API_TOKEN", "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD"):
        assert used[secret] == ":?", f"{secret} must be required (${{{secret}:?...}})"
        assert example[secret] == "", f".env.example must not ship a value for {secret}"
        with pytest.raises(MissingVariable):
            interpolate_all(RAW, {**FILLED_ENV, secret: ""})


def test_the_server_persists_with_aof_has_a_password_and_never_evicts():
    redis = SERVICES["redis"]
    command = redis["command"]

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert option("--requirepass") == FILLED_ENV["DETEKTR_REDIS_PASSWORD"]
    assert option("--appendonly") == "yes"
    assert option("--maxmemory-policy") == "noeviction" and option("--maxmemory") == "1gb"
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data" and volume in COMPOSE["volumes"], "the data lives in a named volume"
    assert redis["environment"]["REDISCLI_AUTH"] == FILLED_ENV["DETEKTR_REDIS_PASSWORD"], "the healthcheck logs in"
    assert "--requirepass" not in " ".join(redis["healthcheck"]["test"])


def test_every_bind_mount_names_a_file_or_folder_of_the_repository():
    mounts = 0
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                mounts += 1
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert mounts >= 8


def test_capture_reads_the_shipped_cameras_file(monkeypatch):
    capture = SERVICES["capture"]
    config = capture["command"][capture["command"].index("--config") + 1]
    source = next(v.split(":")[0] for v in capture["volumes"] if v.split(":")[1] == config)
    monkeypatch.setenv("CAMERA_PASSWORD", "secret")
    cameras = load_cameras(REPO / source).cameras
    assert [camera.source for camera in cameras] == ["synthetic"], "it starts without a camera"
    assert "CAMERA_PASSWORD" in capture["environment"]


def test_user_processors_are_mounted_and_importable_from_the_path_the_services_get(processors):
    for name, service in DETEKTR_SERVICES.items():
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
        if name == "capture":
            continue
        assert mounts.get("/app/processors") == "./processors", name
        assert service["environment"]["PYTHONPATH"] == "/app/processors"
    custom = SERVICES["worker-custom"]["command"]
    assert custom[custom.index("-Q") + 1] == "brightness" and "brightness" in processors


@pytest.mark.parametrize("name", sorted(DETEKTR_SERVICES))
def test_detektr_healthchecks_run_a_real_check(name):
    test = DETEKTR_SERVICES[name]["healthcheck"]["test"]
    assert test[1:4] == ["python", "-m", "detektr.healthcheck"]
    role = test[4]
    assert role in {*CHECKS, "http"}
    command = DETEKTR_SERVICES[name]["command"]
    if role in ("worker", "beat"):
        assert command[:4] == ["celery", "-A", "detektr", role]
    elif role == "http":
        port = test[5].rsplit(":", 1)[1].split("/")[0]
        published = [p.rsplit(":", 1)[-1] for p in DETEKTR_SERVICES[name]["ports"]]
        assert port in published, f"{name}'s check asks port {port}; it serves {published}"
    else:
        assert command[:2] == ["detektr", role]


def test_ingest_and_workers_export_traces_to_the_otlp_collector():
    for name, service in DETEKTR_SERVICES.items():
        command = service["command"]
        if command[:2] == ["detektr", "ingest"] or name in WORKERS:
            environment = service["environment"]
            assert environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
            host, port = environment["OTEL_EXPORTER_OTLP_ENDPOINT"].removeprefix("http://").split(":")
            assert host in SERVICES and port == "4318"


def test_flower_asks_for_a_login():
    assert SERVICES["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:secret"


def test_git_keeps_the_users_env_file_out():
    assert ".env" in (REPO / ".gitignore").read_text().split()

"""The API's plain parts: the token check, Frigate's stats shape, registrations, upload checks."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from detektr import stats
from detektr.api import frigate_stats, token_matches
from detektr.cluster_metrics import ClusterSnapshot
from detektr.external import RegisteredProcessor, as_heartbeat
from detektr.registry import merge_heartbeats
from detektr.uploads import UploadRefused, image_format, read_capped


def test_the_token_must_match_exactly():
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("s3cre", "s3cret")
    assert not token_matches("s3cret ", "s3cret")
    assert not token_matches("sécret", "s3cret")  # not ASCII: compared as bytes, never an error


def test_stats_have_frigates_shape():
    snapshot = ClusterSnapshot(
        cameras={"door": dict.fromkeys(stats.names("camera"), 0), "yard": dict.fromkeys(stats.names("camera"), 0)},
        processors={"face": {"counters": dict.fromkeys(stats.names("processor"), 0) | {"processed": 12},
                             "workers": 1, "capacity": 2, "queue_depth": 3, "level": "normal",
                             "breaker": "closed"}})
    rates = {"door": {"camera_fps": 5.0, "process_fps": 5.0, "skipped_fps": 1.25, "detection_fps": 10.0}}
    shown = frigate_stats(rates, {"face": 12.5}, snapshot, 42.7)
    assert shown["cameras"]["door"] == rates["door"]
    assert shown["cameras"]["yard"] == {"camera_fps": 0.0, "process_fps": 0.0, "skipped_fps": 0.0,
                                        "detection_fps": 0.0}
    assert shown["detectors"]["face"]["inference_speed"] == 12.5
    assert shown["detectors"]["face"]["processed"] == 12
    assert (shown["camera_fps"], shown["skipped_fps"], shown["detection_fps"]) == (5.0, 1.25, 10.0)
    assert shown["service"]["uptime"] == 42 and shown["service"]["version"]


def test_a_registration_is_validated_and_merges_like_a_worker_of_its_capacity():
    plates = RegisteredProcessor(name="plates", capabilities=["plate_reading", "plate_reading"], capacity=3)
    record = {"processor": plates.advertised(), "registered_at": 1.0, "expires_at": None}
    live = merge_heartbeats([as_heartbeat(record)])
    assert live["plates"].capacity == 3 and live["plates"].capabilities == ("plate_reading",)
    assert (live["plates"].queue, live["plates"].result_stream) == ("plates", "results:plates")
    for bad in ({"name": "Plates"}, {"capacity": 0}, {"capabilities": []}, {"capabilities": ["a b"]},
                {"queue": "maintenance"}, {"result_stream": "frames:dead"}, {"result_stream": "detektr:x"},
                {"routing": "affinity"}, {"ttl_s": 0}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            RegisteredProcessor.model_validate({"name": "plates", "capabilities": ["c"], "capacity": 1} | bad)


def test_an_upload_format_comes_from_its_first_bytes_unless_declared():
    assert image_format(b"\xff\xd8\xff\xe0rest", None) == "jpeg"
    assert image_format(b"\x89PNG\r\n\x1a\nrest", None) == "png"
    assert image_format(b"anything", "raw") == "raw"
    for data, declared in ((b"GIF89a", None), (b"\xff\xd8\xff", "gif")):
        with pytest.raises(UploadRefused):
            image_format(data, declared)


def test_an_upload_is_read_no_further_than_its_limit():
    async def chunks(sizes):
        for size in sizes:
            yield b"x" * size

    assert asyncio.run(read_capped(chunks([10, 10]), None, 20)) == b"x" * 20
    with pytest.raises(UploadRefused) as refused:
        asyncio.run(read_capped(chunks([10, 10, 1]), None, 20))
    assert refused.value.status == 413
    with pytest.raises(UploadRefused) as declared:
        asyncio.run(read_capped(chunks([]), "21", 20))  # refused before reading
    assert declared.value.status == 413
    with pytest.raises(UploadRefused) as garbled:
        asyncio.run(read_capped(chunks([]), "-1", 20))
    assert garbled.value.status == 400


@pytest.mark.parametrize("command", [["api", "--port", "{port}"], ["ingest"]])
def test_a_port_taken_is_one_line_and_status_2(command):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"PATH": "", "REDIS_URL": "redis://127.0.0.1:1/0", "DETEKTR_METRICS__PORT": str(port),
               "DETEKTR_METRICS__HOST": "127.0.0.1"}
        done = subprocess.run([str(Path(sys.executable).parent / "detektr"), *(p.format(port=port) for p in command)],
                              capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "PORT" in lines[0], done.stderr

"""Settings from the environment; result encoding; URL redaction."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from detektr.config import load_settings, redact_url
from detektr.results import encode_result


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("DETEKTR_PROCESSORS", "my.procs, other.procs")
    monkeypatch.setenv("DETEKTR_ROUTING", "affinity")
    monkeypatch.setenv("DETEKTR_INGEST__BATCH_SIZE", "7")
    settings = load_settings()
    assert settings.redis_url == "redis://example:6380/2"
    assert settings.processors == ["my.procs", "other.procs"]
    assert settings.routing == "affinity" and settings.ingest.batch_size == 7


def test_settings_out_of_bounds_are_refused(monkeypatch):
    monkeypatch.setenv("DETEKTR_ROUTING", "random")
    with pytest.raises(ValidationError):
        load_settings()
    monkeypatch.delenv("DETEKTR_ROUTING")
    monkeypatch.setenv("DETEKTR_INGEST__BATCH_SIZE", "0")
    with pytest.raises(ValidationError):
        load_settings()


def test_results_encode_numpy_values():
    encoded = encode_result({"n": np.int64(3), "a": np.array([1.5, 2.0]), "t": (1, 2)})
    assert encoded == '{"n":3,"a":[1.5,2.0],"t":[1,2]}'
    with pytest.raises(TypeError):
        encode_result({"x": object()})
    with pytest.raises(ValueError):
        encode_result({"x": float("nan")})


def test_credentials_are_redacted():
    assert redact_url("redis://user:secret@host:6379/0") == "redis://***@host:6379/0"
    assert redact_url("rtsp://admin:pw@10.0.0.2/stream") == "rtsp://***@10.0.0.2/stream"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    assert redact_url("rtsp://admin:pw@[fe80::1]:554/s") == "rtsp://***@[fe80::1]:554/s"
    assert (redact_url("rtsp://10.0.0.3:554/cam/realmonitor?channel=1&user=admin&Password=hunter2")
            == "rtsp://10.0.0.3:554/cam/realmonitor?channel=1&user=***&Password=***")
    assert redact_url("http://cam/video.mjpg?resolution=720") == "http://cam/video.mjpg?resolution=720"

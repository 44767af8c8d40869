"""The cameras configuration: validation, YAML loading, environment references, and no leaked credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from detektr.cameras import CameraConfig, ConfigError, build_config, load_cameras, single_camera, source_kind

SECRET = "pa55word-do-not-print"


def test_a_cameras_file_is_loaded_with_defaults(tmp_path: Path):
    path = tmp_path / "cameras.yaml"
    path.write_text(f"""
cameras:
  - id: door
    source: rtsp://viewer:{SECRET}@10.0.0.5/stream1
    fps: 5
    width: 640
    capabilities: [motion_detection, face_detection]
    priority: 7
  - id: lobby
    source: /srv/video/lobby.mp4
  - id: usb
    source: 0
  - id: demo
    source: synthetic
watchdog:
  no_frame_timeout_s: 4
""")
    config = load_cameras(path)
    door, lobby, usb, demo = config.cameras
    assert door.fps == 5 and door.width == 640 and door.priority == 7
    assert door.capabilities == ("motion_detection", "face_detection")
    assert [c.kind for c in config.cameras] == ["url", "file", "device", "synthetic"]
    assert [c.is_live for c in config.cameras] == [True, False, True, True]
    assert [c.queue_limit for c in config.cameras] == [1, 64, 1, 1]
    assert usb.source == "0" and lobby.quality == 80 and lobby.capabilities is None
    assert config.watchdog.no_frame_timeout_s == 4 and config.watchdog.backoff_max_s == 30
    assert SECRET not in repr(config)  # sources are left out of reprs


@pytest.mark.parametrize(("camera", "expected"), [
    ({"id": "c", "source": "synthetic", "colour": "red"}, "cameras.0.colour: Extra inputs are not permitted"),
    ({"id": "c", "source": "synthetic", "fps": 0}, "cameras.0.fps: Input should be greater than 0"),
    ({"id": "c", "source": "synthetic", "priority": 10}, "cameras.0.priority: Input should be less than or equal"),
    ({"id": "c", "source": "synthetic", "quality": 0}, "cameras.0.quality: Input should be greater than or equal"),
    ({"id": "bad id", "source": "synthetic"}, "cameras.0.id: String should match pattern"),
    ({"id": "c", "source": "synthetic", "capabilities": ["ok", "no spaces"]}, "invalid capability names"),
    ({"id": "c"}, "cameras.0.source: Field required"),
    ({"id": "c", "source": f"rtps://u:{SECRET}@host/x"}, "URL scheme 'rtps' is not one of rtsp"),
])
def test_bad_cameras_are_refused_with_the_field_named(camera, expected):
    with pytest.raises(ConfigError) as error:
        build_config({"cameras": [camera]})
    assert expected in str(error.value)
    assert SECRET not in str(error.value)


def test_camera_ids_are_unique():
    with pytest.raises(ConfigError, match="repeated: a"):
        build_config({"cameras": [{"id": "a", "source": "synthetic"}, {"id": "a", "source": "0"}]})


def test_at_least_one_camera():
    with pytest.raises(ConfigError, match="cameras: List should have at least 1 item"):
        build_config({"cameras": []})


def test_sources_may_name_environment_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOOR_PASSWORD", SECRET)
    camera = CameraConfig(id="door", source="rtsp://viewer:${DOOR_PASSWORD}@10.0.0.5/s")
    assert camera.source == f"rtsp://viewer:{SECRET}@10.0.0.5/s"
    monkeypatch.delenv("DOOR_PASSWORD")
    with pytest.raises(ConfigError, match=r"refers to \$\{DOOR_PASSWORD\}, which is not set"):
        build_config({"cameras": [{"id": "door", "source": "rtsp://viewer:${DOOR_PASSWORD}@10.0.0.5/s"}]})


@pytest.mark.parametrize(("text", "expected"), [
    ("cameras: [", "not valid YAML (line 1)"),
    ("- just a list", "expected a mapping with a `cameras` list"),
    ("cameras:\n  - id: c\n    source: synthetic\nwatchdog:\n  backoff_max_s: -1\n",
     "watchdog.backoff_max_s: Input should be greater than 0"),
])
def test_bad_files_give_one_line_reasons(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_cameras(path)
    assert expected in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="No such file"):
        load_cameras(tmp_path / "absent.yaml")


def test_single_camera_from_command_line_options():
    config = single_camera({"id": "cam01", "source": "synthetic", "fps": None, "width": 320},
                           {"no_frame_timeout_s": None, "backoff_max_s": 5})
    assert config.cameras[0].width == 320 and config.cameras[0].fps is None
    assert config.watchdog.backoff_max_s == 5 and config.watchdog.no_frame_timeout_s == 10


@pytest.mark.parametrize(("source", "kind"), [
    ("synthetic", "synthetic"), ("0", "device"), ("12", "device"), ("/dev/video2", "device"),
    ("rtsp://h/s", "url"), ("http://h/s.mjpg", "url"), ("/tmp/a.mp4", "file"), ("clip.avi", "file"),
])
def test_source_kinds(source: str, kind: str):
    assert source_kind(source) == kind


def test_the_cameras_file_in_the_docs_is_valid(monkeypatch: pytest.MonkeyPatch):
    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "capture.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("DOOR_PASSWORD", SECRET)
    config = build_config(yaml.safe_load(example))
    assert [c.id for c in config.cameras] == ["door", "yard", "lobby-replay"]
    assert config.cameras[2].is_live and config.cameras[2].loop

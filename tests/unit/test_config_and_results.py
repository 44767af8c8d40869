"""Settings from the environment; result encoding; URL redaction."""

from __future__ import annotations

import numpy as np
import pytest

from detektr.config import load_settings
from detektr.errors import ConfigError
from detektr.redaction import redact_url
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


def test_settings_out_of_bounds_are_refused_naming_the_variable_but_never_its_value(monkeypatch):
    monkeypatch.setenv("DETEKTR_ROUTING", "random")
    with pytest.raises(ConfigError, match="DETEKTR_ROUTING: Input should be"):
        load_settings()
    monkeypatch.delenv("DETEKTR_ROUTING")
    monkeypatch.setenv("DETEKTR_INGEST__BATCH_SIZE", "0")
    with pytest.raises(ConfigError, match="DETEKTR_INGEST__BATCH_SIZE: Input should be greater than or equal to 1"):
        load_settings()
    monkeypatch.delenv("DETEKTR_INGEST__BATCH_SIZE")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@example:6379/0")
    monkeypatch.setenv("DETEKTR_INPUT_MAXLEN", "many")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "DETEKTR_INPUT_MAXLEN" in str(refused.value) and "many" not in str(refused.value)


def test_a_command_with_bad_settings_says_so_in_one_line(monkeypatch, capsys):
    from detektr.cli import main

    monkeypatch.setenv("DETEKTR_INGEST__MAX_HOLD_MS", "50000")
    assert main(["ingest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detektr ingest: invalid configuration: DETEKTR_INGEST__MAX_HOLD_MS")


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


def test_publisher_appends_each_frame_once_and_counts_only_new_results(module_db_url):
    import redis

    from detektr import keys
    from detektr.frame import FrameRef
    from detektr.results import ResultPublisher

    client = redis.Redis.from_url(module_db_url)
    publisher = ResultPublisher(client, stream_maxlen=1000, dedupe_ttl_s=60)

    def ref(frame_id: str, camera: str) -> FrameRef:
        return FrameRef(frame_id=frame_id, camera_id=camera, timestamp=1.0, image_key=f"img:{frame_id}",
                        format="jpeg", ingested_at=1.0,
                        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")

    first = [(ref("p1", "cam-a"), '{"n":1}', None), (ref("p2", "cam-b"), '{"n":2}', {"gate": "open"})]
    assert publisher.publish_many("unit", "results:unit", first) == [True, True]
    again = [(ref("p2", "cam-b"), '{"n":2}', None), (ref("p3", "cam-a"), '{"n":3}', None)]
    counted = {"batches": 1, "batched_frames": 2}  # counters ride along in the same call
    assert publisher.publish_many("unit", "results:unit", again, counted) == [False, True]
    assert publisher.publish_many("unit", "results:unit", []) == []
    assert publisher.publish_many("unit", "results:unit", [], {"batches": 1}) == []  # a batch with no result

    entries = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange("results:unit")]
    assert [e["frame_id"] for e in entries] == ["p1", "p2", "p3"]
    assert entries[1]["result"] == '{"n":2}' and entries[1]["gate"] == "open" and "gate" not in entries[0]
    assert entries[0]["camera_id"] == "cam-a" and entries[0]["traceparent"].startswith("00-aaaa")
    assert float(entries[2]["latency_ms"]) > 0
    stats = client.hgetall(keys.processor_stats("unit"))
    assert int(stats[b"processed"]) == 3
    assert (int(stats[b"batches"]), int(stats[b"batched_frames"])) == (2, 2)
    with pytest.raises(ValueError, match="not a declared processor counter"):
        publisher.publish_many("unit", "results:unit", [], {"batchez": 1})
    assert int(client.hget(keys.camera_stats("cam-a"), "processed")) == 2
    assert int(client.hget(keys.camera_stats("cam-b"), "processed")) == 1


def test_the_last_pair_to_end_gives_back_the_bytes_as_the_frame_s_owners_say(module_db_url):
    import redis

    from detektr import keys
    from detektr.frame import EntryRef, FrameRef
    from detektr.outcomes import Ending, FrameOutcomes
    from detektr.results import ResultPublisher

    client = redis.Redis.from_url(module_db_url)
    publisher = ResultPublisher(client, stream_maxlen=1000, dedupe_ttl_s=60)
    outcomes = FrameOutcomes(client, stream_maxlen=1000, dedupe_ttl_s=60)
    stream = "frames:owners"

    def frame(frame_id: str, owners: int, in_entry: bool) -> FrameRef:
        place: dict = {"image_key": f"img:{frame_id}"}
        if in_entry:
            place = {"image_entry": EntryRef(stream=stream, id=client.xadd(stream, {"image": b"x"}).decode())}
        else:
            client.set(f"img:{frame_id}", b"x")
        if owners > 1:
            client.set(keys.frame_refs(frame_id), owners)
        return FrameRef(frame_id=frame_id, camera_id="cam-o", timestamp=1.0, format="jpeg", ingested_at=1.0,
                        owners=owners, **place)

    def there(ref: FrameRef) -> bool:
        holder, entry = ref.bytes_holder
        return bool(client.xrange(holder, entry, entry)) if entry else bool(client.exists(holder))

    sole, sole_key, kept = frame("o1", 1, True), frame("o2", 1, False), frame("o3", 0, True)
    shared = frame("o4", 2, True)
    publisher.publish_many("unit-a", "results:owners", [(r, "{}", None) for r in (sole, sole_key, kept, shared)])
    assert [there(r) for r in (sole, sole_key, kept, shared)] == [False, False, True, True]
    assert client.get(keys.frame_refs("o4")) == b"1"
    assert outcomes.end([Ending("unit-a", shared, "dead")]) == [False]  # that pair had ended: nothing taken
    assert there(shared)
    assert outcomes.end([Ending("unit-b", shared, "skipped")]) == [True]  # the last of its two pairs
    assert not there(shared) and not client.exists(keys.frame_refs("o4"))
    assert outcomes.end([Ending("unit-b", kept, "expired")]) == [True] and there(kept)  # not detektr's to delete


def test_worker_and_ingest_processes_keep_freed_memory_on_glibc():
    import platform

    from detektr.memory import keep_freed_memory

    assert keep_freed_memory(0) is False  # 0 leaves glibc's defaults alone
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory(256) is True


def test_ingest_may_not_hold_frames_as_long_as_a_dead_consumers_entries_are_left(monkeypatch):
    monkeypatch.setenv("DETEKTR_INGEST__CLAIM_IDLE_MS", "1000")
    monkeypatch.setenv("DETEKTR_INGEST__MAX_HOLD_MS", "1000")
    with pytest.raises(ConfigError, match="DETEKTR_INGEST: max_hold_ms .1000. must be shorter than claim_idle_ms"):
        load_settings()
    monkeypatch.setenv("DETEKTR_INGEST__MAX_HOLD_MS", "200")
    assert load_settings().ingest.max_hold_ms == 200


def test_exactly_once_markers_must_outlive_a_lost_tasks_redelivery(monkeypatch):
    monkeypatch.setenv("DETEKTR_RESULTS__DEDUPE_TTL_S", "120")  # the visibility timeout is 300 s
    refused = r"DEDUPE_TTL_S \(120\) must be at least DETEKTR_CELERY__VISIBILITY_TIMEOUT_S \(300\)"
    with pytest.raises(ConfigError, match=refused):
        load_settings()
    monkeypatch.setenv("DETEKTR_CELERY__VISIBILITY_TIMEOUT_S", "60")
    assert load_settings().results.dedupe_ttl_s == 120


def test_every_setting_is_documented_in_the_configuration_page():
    from pathlib import Path

    from detektr.config import Settings, settings_variables

    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    variables = list(settings_variables(Settings, "DETEKTR_"))
    assert "DETEKTR_WORKER__DECODE_AHEAD" in variables and len(variables) > 20
    # a row may name a sibling by its last part: "`DETEKTR_FRAMES__MAX_WIDTH` / `__MAX_HEIGHT`"
    missing = [v for v in variables if f"`{v}`" not in page and f"`__{v.rsplit('__', 1)[-1]}`" not in page
               and v != "DETEKTR_REDIS_URL"]  # documented as REDIS_URL, its usual name
    assert missing == [], f"settings missing from docs/configuration.md: {missing}"
    assert "`REDIS_URL`" in page


def test_decode_ahead_is_read_from_the_environment_and_bounded(monkeypatch):
    monkeypatch.setenv("DETEKTR_WORKER__DECODE_AHEAD", "0")
    assert load_settings().worker.decode_ahead == 0
    monkeypatch.setenv("DETEKTR_WORKER__DECODE_AHEAD", "65")
    with pytest.raises(ConfigError, match="DETEKTR_WORKER__DECODE_AHEAD"):
        load_settings()


def test_nothing_celery_does_for_detektr_uses_pickle():
    from celery.beat import PersistentScheduler, Scheduler
    from celery.utils.imports import symbol_by_name

    from detektr.celeryconfig import celery_config

    config = celery_config(load_settings())
    assert config["task_serializer"] == config["event_serializer"] == "json"
    assert config["accept_content"] == config["result_accept_content"] == ["json"]
    scheduler = symbol_by_name(config["beat_scheduler"])
    assert issubclass(scheduler, Scheduler) and not issubclass(scheduler, PersistentScheduler), \
        "Celery's persistent beat scheduler keeps its schedule with shelve, which is pickle"


def test_a_batch_of_routed_frames_is_counted_per_camera_and_processor_in_one_command_each():
    from detektr import keys, stats

    class Recorder:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *args: self.calls.append((name, *args))

    pipe = Recorder()
    stats.count_routed(pipe, [("cam1", ["motion", "face"]), ("cam1", ["motion"]), ("cam2", ["motion"]), ("cam2", [])])
    assert sorted(pipe.calls) == sorted([
        ("sadd", keys.CAMERAS_INDEX, "cam1", "cam2"), ("sadd", keys.PROCESSORS_INDEX, "motion", "face"),
        ("hincrby", keys.camera_stats("cam1"), "in", 2), ("hincrby", keys.camera_stats("cam1"), "routed", 3),
        ("hincrby", keys.camera_stats("cam2"), "in", 2), ("hincrby", keys.camera_stats("cam2"), "routed", 1),
        ("hincrby", keys.processor_stats("motion"), "routed", 3),
        ("hincrby", keys.processor_stats("face"), "routed", 1),
    ])
    quiet = Recorder()
    stats.count_routed(quiet, [])
    assert quiet.calls == []

"""Held messages: live workers vouch for theirs, beat gives back the rest; a lost server requeues a task."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import redis
from celery import Celery
from celery.exceptions import Reject
from kombu import Queue
from kombu.exceptions import OperationalError

from detektr import keys, tasks
from detektr.beat.checks import restore_stale_held
from detektr.celeryconfig import celery_config
from detektr.config import load_settings
from detektr.errors import ConfigError
from detektr.heartbeat import WorkerHeartbeat
from detektr.held import held_tags, stale_tags
from detektr.processor import declared_processors
from detektr.requeue import requeue_on_server_loss


def test_tags_older_than_the_threshold_are_stale_oldest_first():
    index = [(b"fresh", 995.0), (b"old", 980.0), ("older", 900.0), (b"edge", 990.0)]
    assert stale_tags(index, now=1000.0, stale_s=10) == ["older", "old"]


def test_no_tag_is_stale_in_an_empty_or_fresh_index():
    assert stale_tags([], now=1000.0, stale_s=10) == []
    assert stale_tags([(b"a", 999.0), (b"b", 1000.5)], now=1000.0, stale_s=10) == []  # a clock ahead: not stale


def test_at_most_limit_stale_tags_are_given_back_at_once():
    index = [(f"t{i}".encode(), float(i)) for i in range(50)]
    assert stale_tags(index, now=1000.0, stale_s=10, limit=3) == ["t0", "t1", "t2"]
    assert stale_tags(index, now=1000.0, stale_s=10, limit=0) == []


def test_held_tags_leave_out_those_acknowledged_but_not_yet_flushed():
    assert held_tags({"a": 1, "b": 2, "c": 3}, acked={"b"}) == ["a", "c"]
    assert held_tags({}) == []


def test_the_stale_threshold_must_leave_room_for_two_heartbeats(monkeypatch):
    monkeypatch.setenv("DETEKTR_WORKER__HEARTBEAT_INTERVAL_S", "6")
    with pytest.raises(ConfigError, match="DETEKTR_WORKER"):
        load_settings()
    monkeypatch.setenv("DETEKTR_WORKER__HELD_STALE_S", "12")
    assert load_settings().worker.held_stale_s == 12


@pytest.mark.parametrize("error", [redis.ConnectionError("gone"), redis.TimeoutError("slow"),
                                   redis.exceptions.BusyLoadingError("loading"), OperationalError("no broker")])
def test_losing_the_server_requeues_the_task(error):
    @requeue_on_server_loss
    def body():
        raise error

    with pytest.raises(Reject) as raised:
        body()
    assert raised.value.requeue is True and raised.value.reason is error


@pytest.mark.parametrize("error", [redis.ResponseError("WRONGTYPE"), ValueError("bug")])
def test_an_error_that_would_come_again_at_once_is_not_requeued(error):
    @requeue_on_server_loss
    def body():
        raise error

    with pytest.raises(type(error)):
        body()


def _requests(count: int, log: list) -> list:
    def request(i: int):
        return SimpleNamespace(
            task=SimpleNamespace(acks_late=True), id=f"r{i}", name="n", _payload=((i,), {}, {}), delivery_info={},
            hostname="h", reply_to=None, correlation_id=f"r{i}", request_dict={},
            acknowledge=lambda: log.append(("ack", i)), reject=lambda requeue: log.append(("reject", i, requeue)),
            send_event=lambda kind, **fields: log.append((kind, i)))
    return [request(i) for i in range(count)]


class _InlinePool:
    def apply_async(self, target, args, accept_callback, callback):
        accept_callback(0, 0.0)
        callback(target(*args))


@pytest.mark.parametrize("lost", [False, True])
def test_a_batch_that_lost_the_server_has_its_messages_requeued_not_acknowledged(app, monkeypatch, lost):
    import tests.e2e.procs  # noqa: F401  (declares the batched processor `batcher`)

    def run_batch(task, spec, delivered):
        assert [payload for payload, _ in delivered] == [0, 1, 2]
        if lost:
            raise Reject(redis.ConnectionError("gone"), requeue=True)
        return [("SUCCESS", "")] * 3

    monkeypatch.setattr(tasks, "run_batch", run_batch)
    batch = tasks.bind(app, declared_processors()["batcher"])
    batch._pool = _InlinePool()
    log: list = []
    batch.flush(_requests(3, log))
    taken = [entry for entry in log if entry[0] in ("ack", "reject")]
    assert taken == ([("reject", i, True) for i in range(3)] if lost else [("ack", i) for i in range(3)])


@pytest.mark.parametrize("outcomes, events", [
    ([("SUCCESS", ""), ("RETRY", "RuntimeError('x')"), ("FAILURE", "dead")],
     ["task-succeeded", "task-retried", "task-failed"]),
    (None, ["task-failed"] * 3),  # the batch task raised: celery-batches returns nothing
])
def test_each_message_of_a_batch_says_how_it_ended_in_task_events(app, monkeypatch, outcomes, events):
    import tests.e2e.procs  # noqa: F401  (declares the batched processor `batcher`)

    monkeypatch.setattr(tasks, "run_batch", lambda task, spec, delivered: outcomes)
    batch = tasks.bind(app, declared_processors()["batcher"])
    batch._pool = _InlinePool()
    log: list = []
    batch.flush(_requests(3, log))
    assert [entry for entry in log if entry[0] == "task-started"] == [("task-started", i) for i in range(3)]
    assert [entry for entry in log if entry[0] in ("task-succeeded", "task-retried", "task-failed")] == [
        (event, i) for i, event in enumerate(events)]
    assert [entry for entry in log if entry[0] == "ack"] == [("ack", i) for i in range(3)]


@pytest.fixture()
def client(module_db_url: str) -> redis.Redis:
    client = redis.Redis.from_url(module_db_url)
    client.flushdb()
    return client


@pytest.fixture()
def app(module_db_url: str) -> Celery:
    app = Celery("unit-held", set_as_current=False)
    app.config_from_object(celery_config(load_settings(redis_url=module_db_url)))
    return app


def _deliver_unacked(app: Celery, queue_name: str, count: int):
    """Publish `count` messages and take them on a consumer that does not acknowledge them: (connection, bodies)."""
    queue = Queue(queue_name, routing_key=queue_name)
    with app.connection_for_write() as connection:
        producer = connection.Producer()
        for i in range(count):
            producer.publish({"n": i}, routing_key=queue_name, declare=[queue], serializer="json")
    consuming = app.connection_for_read()
    got: list = []
    consumer = consuming.Consumer(queue, callbacks=[lambda body, message: got.append(message)], accept=["json"])
    consumer.qos(prefetch_count=count)
    consumer.consume()
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        consuming.drain_events(timeout=1)
    assert len(got) == count
    return consuming, consumer, got


def test_beat_gives_back_what_no_live_worker_vouched_for_and_leaves_the_rest(client, app):
    consuming, consumer, messages = _deliver_unacked(app, "unit-held", 3)
    try:
        assert client.hlen(keys.KOMBU_UNACKED) == 3 and client.zcard(keys.KOMBU_UNACKED_INDEX) == 3
        assert set(held_tags(consumer.channel.qos._delivered)) == {m.delivery_tag for m in messages}
        vouched = messages[0].delivery_tag
        heartbeat = WorkerHeartbeat(client, {"hostname": "w@h", "processors": []}, ttl_s=10)
        later = time.time() + 60
        heartbeat.beat([vouched, "acked-meanwhile"])  # the second is not held: ZADD XX must not add it
        client.zadd(keys.KOMBU_UNACKED_INDEX, {vouched: later}, xx=True)  # as if vouched for a minute later
        assert client.zscore(keys.KOMBU_UNACKED_INDEX, "acked-meanwhile") is None

        assert restore_stale_held(client, app, stale_s=10, now=later) == 2
        assert client.llen("unit-held") == 2  # back in the queue, next in line
        assert client.hkeys(keys.KOMBU_UNACKED) == [vouched.encode()]
        assert restore_stale_held(client, app, stale_s=10, now=later) == 0
    finally:
        consumer.channel.qos.restore_at_shutdown = False
        consuming.release()

"""How a task whose frames failed ends for Celery (and Flower): retried, failed, or given back to its queue."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis
from celery.exceptions import Reject, Retry
from kombu.exceptions import OperationalError

from detektr import stats
from detektr.errors import ProcessorFailed
from detektr.execution import _end_as_celery_sees_it
from detektr.requeue import requeue_on_server_loss
from detektr.router import celery_priority


@pytest.fixture()
def client(module_db_url: str) -> redis.Redis:
    client = redis.Redis.from_url(module_db_url)
    client.flushdb()
    return client


class _Task:
    """Stands in for a bound Celery task: records its retry, or fails to send it as Celery does."""

    def __init__(self, send_error: Exception | None = None) -> None:
        self.calls: list[dict] = []
        self.send_error = send_error

    def retry(self, **options):
        self.calls.append(options)
        if self.send_error is not None:
            raise Reject(self.send_error, requeue=False)  # what Celery's Task.retry does when sending fails
        return Retry(exc=options["exc"], when=options["countdown"])


SPEC = SimpleNamespace(name="flaky")
RETRIES = [({"frame_id": "a", "attempt": 1}, 0.4, 2), ({"frame_id": "b", "attempt": 2}, 0.2, 7)]


def test_frames_to_try_again_leave_in_one_celery_retry_with_the_shortest_delay(client):
    task, error = _Task(), RuntimeError("boom")
    with pytest.raises(Retry) as raised:
        _end_as_celery_sees_it(task, SimpleNamespace(redis=client), SPEC, "flaky", RETRIES, spent=1, error=error)
    assert raised.value.exc is error
    (call,) = task.calls
    assert call["args"] == [[{"frame_id": "a", "attempt": 1}, {"frame_id": "b", "attempt": 2}]]
    assert call["argsrepr"] == "[a, b]"  # what Flower shows: the frames, not a repr of every field
    assert call["countdown"] == 0.2 and call["queue"] == "flaky" and call["priority"] == celery_priority(7)
    assert stats.read_processor(client, "flaky")["retries"] == 2


def test_a_task_whose_frames_were_dead_lettered_fails(client):
    error = RuntimeError("boom")
    with pytest.raises(ProcessorFailed, match="2 frame.*RuntimeError\\('boom'\\)"):
        _end_as_celery_sees_it(_Task(), SimpleNamespace(redis=client), SPEC, "flaky", [], spent=2, error=error)


def test_a_task_whose_frames_all_succeeded_ends_quietly(client):
    _end_as_celery_sees_it(_Task(), SimpleNamespace(redis=client), SPEC, "flaky", [], spent=0, error=None)


def test_a_retry_that_cannot_be_sent_for_want_of_the_server_requeues_the_task(client):
    @requeue_on_server_loss
    def body():
        _end_as_celery_sees_it(_Task(OperationalError("no broker")), SimpleNamespace(redis=client), SPEC, "flaky",
                               RETRIES, spent=0, error=RuntimeError("boom"))

    with pytest.raises(Reject) as raised:
        body()
    assert raised.value.requeue is True
    assert stats.read_processor(client, "flaky")["retries"] == 0  # counted only once the retry is sent


def test_a_retry_that_cannot_be_sent_for_another_reason_is_dropped_as_celery_drops_it(client):
    with pytest.raises(Reject) as raised:
        _end_as_celery_sees_it(_Task(ValueError("bad")), SimpleNamespace(redis=client), SPEC, "flaky", RETRIES,
                               spent=0, error=RuntimeError("boom"))
    assert raised.value.requeue is False


def test_a_task_shows_its_frames_ids_as_its_arguments():
    from detektr.dispatch import frames_repr

    assert frames_repr([{"frame_id": "f1"}]) == "[f1]"
    assert frames_repr([{"frame_id": f"f{i}"} for i in range(40)]) == "[f0, ... f39: 40 frames]"

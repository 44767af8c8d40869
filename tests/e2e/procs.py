"""Processors of a user's own module, loaded through DETEKTR_PROCESSORS=tests.e2e.procs."""

from __future__ import annotations

import os

import redis
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import Frame, ProcessorSettings, processor


def _who(name: str, frame: Frame) -> dict:
    return {"who": name, "width": frame.width, "height": frame.height, "pid": os.getpid()}


@processor("alpha", capabilities=["shared"], capacity=2)
def alpha(frame: Frame) -> dict:
    """First of three processors sharing one capability."""
    return _who("alpha", frame)


@processor("beta", capabilities=["shared"], capacity=2)
def beta(frame: Frame) -> dict:
    """Second of three processors sharing one capability."""
    return _who("beta", frame)


@processor("gamma", capabilities=["shared"], capacity=2)
def gamma(frame: Frame) -> dict:
    """Third of three processors sharing one capability."""
    return _who("gamma", frame)


def _connect() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


@processor("flaky", capabilities=["flaky"], max_retries=2, setup=_connect)
def flaky(frame: Frame, client: redis.Redis) -> dict:
    """Fails on its first attempt at every frame; a frame with metadata {"always_fail": true} always fails."""
    attempts = client.incr(f"test:attempts:{frame.frame_id}")
    if frame.metadata.get("always_fail") or attempts == 1:
        raise RuntimeError(f"simulated failure on attempt {attempts}")
    return {"attempts": attempts}


@processor("gatekeeper", capabilities=["gatekeeping"], gate=lambda result: result["open"])
def gatekeeper(frame: Frame) -> dict:
    """A gating processor: the frame's metadata says whether the gate opens."""
    return {"open": bool(frame.metadata.get("open"))}


@processor("follower", capabilities=["following"], gated_by="gatekeeper")
def follower(frame: Frame) -> dict:
    """Runs only on frames that passed the gatekeeper's gate; says what the gate's result told it."""
    return {"followed": frame.frame_id, "gate_result": frame.gate_result}


@processor("batcher", capabilities=["batching"], batch_size=8, batch_wait_ms=3000)
def batcher(frames: list[Frame]) -> list[dict]:
    """A batched processor that reports the size of each batch it got."""
    return [{"batch": len(frames), "index": i, "frame_id": frame.frame_id} for i, frame in enumerate(frames)]


@processor("sticky", capabilities=["sticky"], routing="affinity")
def sticky(frame: Frame) -> dict:
    """Reports which worker process handled the frame."""
    return {"pid": os.getpid()}


@processor("slow", capabilities=["slow"], setup=_connect)
def slow(frame: Frame, client: redis.Redis) -> dict:
    """Announces its pid, then takes a while (long enough for a test to kill the process)."""
    import time

    first = client.set(f"test:started:{frame.frame_id}", os.getpid(), nx=True)
    if first:
        time.sleep(30)
    return {"pid": os.getpid()}


@processor("needy", capabilities=["needy"], requires_env=["TEST_NEEDY_TOKEN"])
def needy(frame: Frame) -> dict:
    """Cannot run without TEST_NEEDY_TOKEN in its worker's environment."""
    return {"token_length": len(os.environ["TEST_NEEDY_TOKEN"])}


@processor("cv-threads", capabilities=["cv_threads"])
def cv_threads(frame: Frame) -> dict:
    """Reports how many threads OpenCV uses in this worker process."""
    import cv2

    return {"threads": cv2.getNumThreads()}


@processor("plodder", capabilities=["plodding"])
def plodder(frame: Frame) -> dict:
    """Takes 20 ms a frame: slower than the frames a test sends it, so its queue backs up."""
    import time

    time.sleep(0.02)
    return {"pid": os.getpid()}


def _prime() -> redis.Redis:
    """A setup that takes a while (a model loading) and leaves a mark when done."""
    import time

    time.sleep(1.0)
    client = _connect()
    client.set("test:primed", os.getpid())
    return client


@processor("primed", capabilities=["priming"], setup=_prime)
def primed(frame: Frame, client: redis.Redis) -> dict:
    """Reports the process its setup ran in."""
    return {"pid": os.getpid(), "primed_in": int(client.get("test:primed"))}


@processor("unpackaged", capabilities=["unpackaged"], requires_packages=["detektr_test_absent_package"])
def unpackaged(frame: Frame) -> dict:
    """Cannot run without a package that is never installed."""
    return {}


class TunedSettings(ProcessorSettings):
    """The settings of `tuned`."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_TUNED_")
    factor: int = Field(2, ge=1, le=10, description="What the width is multiplied by.")


@processor("tuned", capabilities=["tuning"], settings=TunedSettings)
def tuned(frame: Frame, settings: TunedSettings) -> dict:
    """Reports the frame's width times its setting."""
    return {"scaled": frame.width * settings.factor}


@processor("sticky-flaky", capabilities=["sticky_flaky"], routing="affinity", max_retries=2, setup=_connect)
def sticky_flaky(frame: Frame, client: redis.Redis) -> dict:
    """Fails on its first attempt at every frame, noting which worker process it ran in."""
    first = client.set(f"test:first-pid:{frame.frame_id}", os.getpid(), nx=True)
    if first:
        raise RuntimeError("simulated failure on the first attempt")
    return {"first_pid": int(client.get(f"test:first-pid:{frame.frame_id}")), "pid": os.getpid()}


@processor("fragile", capabilities=["fragile"], max_retries=1)
def fragile(frame: Frame) -> dict:
    """Fails on a frame whose metadata says {"fail": true}, works otherwise."""
    if frame.metadata.get("fail"):
        raise RuntimeError("told to fail")
    return {"ok": True}


@processor("hasty", capabilities=["hasty"], max_age_ms=150)
def hasty(frame: Frame) -> dict:
    """Takes 50 ms a frame, and its frames have a deadline of 150 ms: a backlog of them expires."""
    import time

    time.sleep(0.05)
    return {"ok": True}


@processor("archiver", capabilities=["archiving"], overload="pause")
def archiver(frame: Frame) -> dict:
    """Must see every frame (pause under backpressure); takes 20 ms a frame."""
    import time

    time.sleep(0.02)
    return {"kept": frame.frame_id}


@processor("brittle", capabilities=["brittle"], batch_size=4, batch_wait_ms=200, max_retries=1)
def brittle(frames: list[Frame]) -> list[dict]:
    """A batched processor that fails every batch: its frames are retried once, then dead-lettered."""
    raise RuntimeError(f"simulated failure of a batch of {len(frames)}")

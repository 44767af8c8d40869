"""Flower, as installed with detektr, shows detektr's workers and how their tasks ended.

`celery -A detektr flower --basic-auth=...` runs against real workers that name themselves (a
processor that succeeds, one that fails every frame, a batched one that fails every batch), with
task events left at their default: Flower turns them on. Its HTTP API and, in a real headless
Chromium (Debian's, through its chromedriver; nothing is downloaded), its pages show the workers,
their queues and tasks named after their processors, in the states they ended in.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from detektr.config import load_settings
from detektr.registry import read_heartbeats
from detektr.status import collect_status
from tests.conftest import BIN, REPO, Cluster, wait_for
from tests.e2e.util import jpeg, producer

pytestmark = pytest.mark.e2e

PROCESSORS = ("alpha", "flaky", "brittle")
AUTH = ("watcher", "s3cret-for-tests")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker_names(client: redis.Redis) -> dict[str, str]:
    """Processor -> the name its (self-named) worker announced in its heartbeat."""
    return {beat["processors"][0]["name"]: beat["hostname"] for beat in read_heartbeats(client, 3)}


def _get(url: str, auth: tuple[str, str] | None = AUTH, timeout_s: float = 10) -> tuple[int, object]:
    """GET `url` (with basic auth unless `auth` is None): (status, parsed JSON body or None)."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
            return response.status, json.loads(body) if response.headers.get_content_type() == "application/json" \
                else None
    except urllib.error.HTTPError as error:
        return error.code, None


@pytest.fixture(scope="module")
def flower(cluster: Cluster) -> Iterator[str]:
    """Workers without `-n`, ingest, and `celery -A detektr flower` with basic auth: Flower's URL."""
    for queue in PROCESSORS:
        cluster.worker(queue, node_name=None)
    cluster.ingest()
    cluster.wait_live(*PROCESSORS)
    port = _free_port()
    log = open(cluster.log_dir / "flower.log", "ab")
    process = subprocess.Popen(
        [str(BIN / "celery"), "-A", "detektr", "flower", f"--port={port}", "--address=127.0.0.1",
         f"--basic-auth={AUTH[0]}:{AUTH[1]}"], cwd=REPO, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout_s=30, message=f"Flower at {url} (log in {cluster.log_dir})")
        # Task events are off by default; Flower turns them on in every worker within its first 5 s.
        wait_for(lambda: all("Events of group {task} enabled by remote" in (cluster.log_dir / f"{name}.log").read_text()
                             for name in PROCESSORS), timeout_s=30, message="Flower to turn task events on")
        _send_frames(cluster)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def _answers(url: str) -> bool:
    try:
        return _get(f"{url}/healthcheck", auth=None, timeout_s=2)[0] == 200
    except OSError:
        return False


def _send_frames(cluster: Cluster) -> None:
    """Frames for each processor; wait until every one has ended (with a result or a dead letter)."""
    client, settings = cluster.redis, load_settings()
    p = producer(client)
    for i in range(4):
        p.add("cam01", jpeg(seed=i), capabilities=["shared"])
    for i in range(2):
        p.add("cam01", jpeg(seed=10 + i), capabilities=["flaky"], metadata={"always_fail": True})
    for i in range(5):
        p.add("cam02", jpeg(seed=20 + i), capabilities=["brittle"])

    def settled():
        processors = collect_status(client, settings)["accounting"]["processors"]
        ended = set(PROCESSORS) <= set(processors) and not any(b["in_flight"] for b in processors.values())
        return processors if ended else None

    books = wait_for(settled, timeout_s=60, message="every frame to end")
    assert books["alpha"]["processed"] == 4 and books["flaky"]["dead"] == 2 and books["brittle"]["dead"] == 5, books
    for name, b in books.items():  # the failures that Flower now sees as failures are still counted once
        assert b["routed"] == b["processed"] + b["skipped"] + b["gated"] + b["expired"] + b["dead"], name


def test_flower_lists_each_worker_by_processor_and_host_with_its_queue(flower, cluster):
    assert _get(f"{flower}/api/workers", auth=None)[0] == 401
    assert _get(f"{flower}/api/workers", auth=("watcher", "wrong"))[0] == 401
    status, workers = _get(f"{flower}/api/workers?refresh=1", timeout_s=30)
    assert status == 200, status
    names = _worker_names(cluster.redis)
    host = socket.gethostname()
    for processor in PROCESSORS:
        name = names[processor]
        assert name.startswith(f"{processor}-") and name.endswith(f"@{host}"), name
        assert [queue["name"] for queue in workers[name]["active_queues"]] == [processor]
        assert f"detektr.process.{processor}" in workers[name]["registered"]


def test_flower_shows_tasks_named_after_processors_in_the_states_they_ended_in(flower, cluster):
    assert _get(f"{flower}/api/tasks", auth=None)[0] == 401
    names = _worker_names(cluster.redis)

    def tasks_by_processor():
        tasks = _get(f"{flower}/api/tasks")[1].values()
        seen: dict[str, list[dict]] = {}
        for task in tasks:
            seen.setdefault(task["name"], []).append(task)
        wanted = {f"detektr.process.{name}" for name in PROCESSORS}
        return seen if wanted <= set(seen) and all(t["state"] not in ("RECEIVED", "STARTED")
                                                   for t in tasks) else None

    seen = wait_for(tasks_by_processor, timeout_s=20, message="Flower to see every processor's tasks end")
    for processor in PROCESSORS:
        assert {task["worker"] for task in seen[f"detektr.process.{processor}"]} == {names[processor]}
    assert {task["state"] for task in seen["detektr.process.alpha"]} == {"SUCCESS"}
    # flaky's task was retried through Celery (same task, twice), then failed: its frames are dead letters.
    flaky = seen["detektr.process.flaky"]
    assert {task["state"] for task in flaky} == {"FAILURE"} and {task["retries"] for task in flaky} == {2}
    assert all("ProcessorFailed" in task["exception"] and "simulated failure" in task["exception"] for task in flaky)
    # brittle's batches: the first attempt is retried (the frames go back in new tasks), the second fails.
    brittle = seen["detektr.process.brittle"]
    assert {task["state"] for task in brittle} == {"RETRY", "FAILURE"}
    assert all("simulated failure of a batch" in task["exception"] for task in brittle)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium through the system chromedriver; Selenium may download nothing."""
    if not (CHROMEDRIVER and Path(CHROMIUM).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/apt-packages.txt lists them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager never fetches a browser or driver
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    yield driver
    driver.quit()


def _page_shows(driver, name: str, *texts: str, timeout_s: float = 30) -> None:
    """Wait until the page's visible text holds every one of `texts`; on failure keep what it showed as `name`.

    Whitespace is left out of the comparison: Flower breaks a long worker name in two for its ellipsis.
    """

    def shown() -> str:
        return "".join(driver.find_element("tag name", "body").text.split())

    try:
        wait_for(lambda: all(text in shown() for text in texts),
                 timeout_s=timeout_s, interval_s=0.5, message=f"the page to show {texts}")
    except AssertionError as failed:
        driver.save_screenshot(str(ARTIFACTS / f"{name}-failed.png"))
        (ARTIFACTS / f"{name}-failed.html").write_text(driver.page_source)
        raise AssertionError(f"{failed}; it shows: {driver.find_element('tag name', 'body').text[:2000]!r} "
                             f"(screenshot and page in {ARTIFACTS})") from None


def test_a_real_browser_sees_the_workers_and_failed_tasks_on_flowers_pages(browser, flower, cluster):
    names = _worker_names(cluster.redis)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.get(f"{flower}/workers")
    _page_shows(browser, "flower-workers", *(names[processor] for processor in PROCESSORS))
    shot = ARTIFACTS / "flower-workers.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot of Flower's workers page: {shot}")

    browser.get(f"{flower}/tasks")
    _page_shows(browser, "flower-tasks", "detektr.process.alpha", "detektr.process.flaky", "detektr.process.brittle",
                "SUCCESS", "FAILURE", "RETRY")
    shot = ARTIFACTS / "flower-tasks.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot of Flower's tasks page: {shot}")

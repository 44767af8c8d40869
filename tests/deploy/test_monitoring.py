"""The Prometheus configuration and the Grafana provisioning and dashboard of the compose stack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from detektr.metrics import CATALOGUE, sample_names
from tests.deploy.stack import DASHBOARD, GRAFANA, PROMETHEUS_CONFIG, SERVICES

PROMTOOL = shutil.which("promtool")
PROMETHEUS = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
BOARD = json.loads(DASHBOARD.read_text())
PANELS = [panel for panel in BOARD["panels"] if panel["type"] != "row"]
METRIC = re.compile(r"\bdetektr_[a-z0-9_]+\b")


def exposed_names() -> set[str]:
    """The series names a scrape shows for detektr's declared metrics (a histogram as _bucket, _sum, _count)."""
    return {name for spec in CATALOGUE for name in sample_names(spec)}


def dashboard_metrics() -> set[str]:
    """Every detektr metric name in the dashboard's PromQL expressions."""
    return {name for panel in PANELS for target in panel["targets"] for name in METRIC.findall(target["expr"])}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: apt-get install prometheus (listed in .ci/apt-packages.txt)"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_promtool_finds_the_prometheus_configuration_valid():
    checked = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_the_api_and_each_process_local_metrics_port_of_the_compose_services():
    scraped = {}
    for job in PROMETHEUS["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                scraped[host] = port
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A", "a scaled service has one A record per replica"
            for host in dns["names"]:
                scraped[host] = str(dns["port"])
    for host, port in scraped.items():
        assert host in SERVICES, f"Prometheus scrapes {host}, which is no compose service"
        environment = SERVICES[host]["environment"]
        served = environment.get("DETEKTR_API__PORT") if host == "api" else environment.get("DETEKTR_METRICS__PORT")
        assert served == port, f"{host} serves /metrics on {served}, Prometheus asks {port}"
    exporters = {name for name, s in SERVICES.items() if s.get("environment", {}).get("DETEKTR_METRICS__PORT")}
    assert exporters <= set(scraped), f"not scraped: {exporters - set(scraped)}"
    assert "api" in scraped and "ingest" in scraped and "worker-face" in scraped


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard_folder():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "detektr.yml").read_text())
    (provider,) = providers["providers"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    assert Path(mounts[provider["options"]["path"]]) == Path("./deploy/grafana/dashboards")
    assert Path(mounts["/etc/grafana/provisioning"]) == Path("./deploy/grafana/provisioning")
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    uids = {panel["datasource"]["uid"] for panel in PANELS}
    uids |= {target["datasource"]["uid"] for panel in PANELS for target in panel["targets"]}
    assert uids == {source["uid"]}, "every panel and query uses the provisioned datasource"


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel_and_no_overlap():
    assert BOARD["uid"] == "detektr" and BOARD["schemaVersion"] >= 36
    ids = [panel["id"] for panel in BOARD["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in BOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "state-timeline"}
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]


def test_every_dashboard_expression_is_valid_promql(tmp_path):
    rules = [{"record": f"detektr:panel{panel['id']}:{target['refId']}", "expr": target["expr"]}
             for panel in PANELS for target in panel["targets"]]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout


def test_the_dashboard_queries_only_catalogue_metrics_and_shows_what_the_issue_asks():
    used = dashboard_metrics()
    assert used <= exposed_names(), f"not declared in detektr.metrics: {used - exposed_names()}"
    titles = " ".join(panel["title"].lower() for panel in PANELS)
    for shown in ("camera fps", "process fps", "skipped fps", "detection fps", "queue depth", "backpressure",
                  "latency", "terminal states", "circuit"):
        assert shown in titles, shown
    for counter in (spec.name for spec in CATALOGUE if spec.kind == "counter"):
        for panel in PANELS:
            for target in panel["targets"]:
                for match in re.finditer(rf"\b{counter}\b(\{{[^}}]*\}})?", target["expr"]):
                    before = target["expr"][:match.start()]
                    assert before.rstrip().endswith("rate("), f"{panel['title']}: a counter is shown as a rate"


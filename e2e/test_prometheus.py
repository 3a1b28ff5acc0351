"""The metrics pipeline: Prometheus (Debian's) scrapes Envoy's /stats/prometheus, the
plugin's counters are queryable with their labels, and the shipped alert rules load and
pass promtool's checks and unit tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import harness
import pytest
import yaml

ALERTS = harness.ROOT / "observability" / "prometheus" / "meshaudit-alerts.yaml"
ALERT_TESTS = harness.ROOT / "observability" / "prometheus" / "meshaudit-alerts.test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "prometheus (promtool) is installed by scripts/setup.sh"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_alert_rules_check_and_unit_tests():
    out = promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr
    out = promtool("test", "rules", str(ALERT_TESTS))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    exe = shutil.which("prometheus")
    assert exe, "prometheus is installed by scripts/setup.sh"
    plugin = harness.plugin_config(yaml.safe_load((harness.E2E / "envoy.yaml").read_text()))
    plugin["reporting"] = {"interval_seconds": 1}
    stack = harness.Stack(plugin=plugin)
    workdir = tmp_path_factory.mktemp("prometheus")
    port = harness.free_port()
    (workdir / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "envoy",
                        "metrics_path": "/stats/prometheus",
                        "static_configs": [{"targets": [f"127.0.0.1:{stack.envoy.admin_port}"]}],
                    }
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        harness.wait_for_port(port, timeout=30)
        yield stack, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        stack.stop()


def query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_counters_are_scraped_with_labels(scraped):
    stack, base = scraped
    for i in range(30):
        stack.request("GET", f"/products/{i}")
    for _ in range(3):
        stack.request("GET", "/admin/forbidden/x")
    expected_requests = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        envoy_side = harness.stat(stack.envoy, "wasmcustom.meshaudit.rule._default.requests")
        result = query(base, 'meshaudit_rule_requests{meshaudit_rule="_default"}')
        if envoy_side == 30 and result and float(result[0]["value"][1]) == 30:
            expected_requests = 30
            break
        time.sleep(0.5)
    assert expected_requests == 30, "Prometheus holds the plugin's request count, labelled by rule"
    denied = query(base, 'meshaudit_kind_records{meshaudit_kind="denied"}')
    assert [float(r["value"][1]) for r in denied] == [3.0]


def test_alert_rules_are_loaded_by_prometheus(scraped):
    _, base = scraped
    deadline = time.monotonic() + 20
    names = set()
    while time.monotonic() < deadline and not names:
        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as r:
            groups = json.load(r)["data"]["groups"]
        names = {rule["name"] for g in groups for rule in g["rules"] if rule.get("health") in ("ok", "unknown")}
        time.sleep(0.5)
    assert names == {
        "MeshauditDenialSpike",
        "MeshauditAuthFailureSpike",
        "MeshauditRecordsSuppressed",
        "MeshauditSinkErrors",
        "MeshauditConfigRejected",
        "MeshauditSilent",
        "MeshauditRecordsHidden",
        "EnvoyAccessLogWriteFailed",
        "EnvoyAccessLogDropped",
        "MeshauditNotAuditing",
        "MeshauditCoverageLow",
    }

"""`meshaudit explain` and `meshaudit test` against the real plugin: each case of
e2e/envoy.cases.yaml is sent through Envoy under the configuration it is written for
(e2e/envoy.yaml); what Envoy records is what the case expects, and what `explain` says
(recorded or not, `why`, the kind, the canonical path)."""

import json
import subprocess
import uuid

import harness
import pytest
import yaml
from test_manifests import CLI, ROOT, plugin_configs

CASES = harness.E2E / "envoy.cases.yaml"
# Each shipped configuration that sees HTTP requests, and its rule tests.
SHIPPED_CASES = [
    ("e2e/envoy.yaml", "e2e/envoy.cases.yaml"),
    ("envoyfilter/wasmplugin-http.yaml", "envoyfilter/wasmplugin-http.cases.yaml"),
    ("envoyfilter/wasmplugin-waypoint.yaml", "envoyfilter/wasmplugin-waypoint.cases.yaml"),
    ("envoyfilter/wasmplugin-learning.yaml", "envoyfilter/wasmplugin-learning.cases.yaml"),
    ("envoyfilter/wasmplugin-admin-streams.yaml", "envoyfilter/wasmplugin-admin-streams.cases.yaml"),
    ("envoyfilter/envoyfilter.yaml", "envoyfilter/envoyfilter.cases.yaml"),
    ("envoyfilter/trafficextension.yaml", "envoyfilter/trafficextension.cases.yaml"),
]


@pytest.fixture(scope="module")
def setup():
    subprocess.run(["cargo", "build", "--quiet", "--features", "cli", "--bin", "meshaudit"], cwd=ROOT, check=True, timeout=600)
    stack = harness.Stack()
    yield stack
    stack.stop()


def explain(config_file, method, path, headers, status) -> list[str]:
    args = [str(CLI), "explain", str(config_file), "--request", f"{method} {path}", "--status", str(status)]
    for name, value in headers.items():
        args += ["--header", f"{name}:{value}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_explain_agrees_with_what_envoy_recorded(setup, tmp_path):
    stack = setup
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(harness.plugin_config(yaml.safe_load((harness.E2E / "envoy.yaml").read_text()))))
    sent = []
    for case in yaml.safe_load(CASES.read_text()):
        method, path = case["request"].split(" ", 1)
        rid = str(uuid.uuid4())
        headers = {"x-request-id": rid, **case.get("headers", {})}
        if "trace_id" in case:
            headers["traceparent"] = f"00-{case['trace_id']}-00f067aa0ba902b7-01"
        status, _, _ = stack.request(method, path, headers)
        assert status == case.get("status", 200), f"{case}: Envoy answered {status}"
        sent.append((case, rid, method, path, headers, status))
    # A marker audited last: once it is in the log, every earlier record is too (one worker).
    marker = str(uuid.uuid4())
    assert stack.request("GET", "/admin/marker", {"x-request-id": marker})[0] == 200
    stack.envoy.wait_records(lambda r: r.get("request", {}).get("id") == marker)
    by_id = {r["request"]["id"]: r for r in stack.envoy.records() if r.get("request", {}).get("id")}

    recorded_both = 0
    for case, rid, method, path, headers, status in sent:
        record = by_id.get(rid)
        where = f"{method} {path} ({status}): Envoy wrote {record}"
        # What the real plugin did is what the case expects...
        assert (record is not None) == case["recorded"], where
        if record is not None:
            assert record["why"].get("rule", "-") == case["rule"], where
            assert record["kind"] == case.get("kind", record["kind"]), where
        # ...and what explain says.
        lines = explain(config_file, method, path, headers, status)
        verdict = next(line for line in lines if line.startswith("verdict: "))
        where += f"; explain says {verdict!r}"
        assert verdict.startswith("verdict: recorded") == (record is not None), where
        if record is None:
            continue
        recorded_both += 1
        explained = json.loads(next(line for line in lines if line.startswith("record: "))[len("record: ") :])
        assert explained["kind"] == record["kind"], where
        assert explained["why"] == record["why"], where
        assert explained["request"]["canonical_path"] == record["request"]["canonical_path"], where
    # Both outcomes were exercised.
    assert 0 < recorded_both < len(sent)


def test_every_shipped_http_configuration_has_its_case_file():
    with_config = {where.split(":")[0] for where, _ in plugin_configs()}
    # The network plugin sees connections, not requests: `test` has nothing to ask it.
    with_config.discard("wasmplugin-network.yaml")
    assert {f"envoyfilter/{name}" for name in with_config} | {"e2e/envoy.yaml"} == {config for config, _ in SHIPPED_CASES}


def test_the_shipped_case_files_pass_and_a_wrong_expectation_fails_with_a_diff(tmp_path):
    for config, cases in SHIPPED_CASES:
        out = subprocess.run(
            [str(CLI), "test", "--assume-hmac-key", str(ROOT / config), str(ROOT / cases)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip().endswith(" cases)")
    wrong = yaml.safe_load(CASES.read_text())
    wrong[0]["recorded"] = True
    wrong[4]["rule"] = "admin-api"
    wrong[10]["kind"] = "access"
    bad = tmp_path / "wrong.cases.yaml"
    bad.write_text(yaml.safe_dump(wrong))
    out = subprocess.run([str(CLI), "test", str(harness.E2E / "envoy.yaml"), str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{bad}: case 0 (GET /healthz): FAILED",
        "    recorded: expected True, got false".replace("True", "true"),
        f"{bad}: case 4 (DELETE /api/v1/users/7/roles): FAILED",
        '    rule: expected "admin-api", got "user-roles"',
        f"{bad}: case 10 (GET /status/403): FAILED",
        '    kind: expected "access", got "denied"',
        f"{bad}: 3 of {len(wrong)} cases failed",
    ]
    bad.write_text("- request: GET /x\n  recorded: true\n  colour: blue\n")
    out = subprocess.run([str(CLI), "test", str(harness.E2E / "envoy.yaml"), str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown field `colour`" in out.stderr, out.stderr

"""The trail's answers (`meshaudit summary`, `policy impact`, `policy suggest`) on trails the
real mesh of test_identity writes: a client sidecar and a server sidecar, both with the
plugin, mTLS callers, RBAC enforced and dry-run, JWT failures, TLS handshake failures and
sampled routine traffic.

- The summary counts exactly what the script sent, each request once across both hops.
- Golden files pin the summary's text, JSON and CSV and the impact report on a trail
  captured here (tests/data/trails/mesh.log; MESHAUDIT_UPDATE_GOLDEN=1 recaptures it).
- `policy suggest` on a learning trail (every request audited at the server) gives a policy
  that Istio's CRD schema accepts; compiled to Envoy RBAC as Istio's builder compiles it
  (istio_rbac, checked against the builder's golden testdata), it lets the observed traffic
  through and denies what was not observed.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import harness
import istio_rbac
import jsonschema
import mesh as ti
import pki
import pytest
import yaml
from test_manifests import CLI, ROOT, crd_schema

GOLDEN = ROOT / "tests" / "data" / "trails"
UPDATE = os.environ.get("MESHAUDIT_UPDATE_GOLDEN") == "1"
# The learning configuration (README, "Policies from the trail"): the workload's usual rules,
# and every other request recorded too (at rate 1, metadata level) for the window.
LEARNING_PLUGIN = yaml.safe_load((ROOT / "envoyfilter" / "wasmplugin-learning.yaml").read_text())["spec"]["pluginConfig"]
CART_ID = pki.spiffe("shop", "cart")
ROUTINE = 10


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(CLI), *args], capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def stop(mesh: ti.Mesh) -> list[str]:
    """Stops both sidecars (each writes its final accounting) and returns their logs."""
    mesh.stop()
    return [str(mesh.server.log_path), str(mesh.client.log_path)]


class Sent:
    """What the script sent, to compare the summary with."""

    def __init__(self) -> None:
        self.ids: dict[str, list[str]] = {}

    def via(self, mesh: ti.Mesh, label: str, method: str, path: str, headers: dict | None = None, expect: int = 200) -> str:
        request_id = f"{label}-{uuid.uuid4().hex[:8]}"
        status, _, _ = mesh.via_client(method, path, {"x-request-id": request_id, **(headers or {})})
        assert status == expect, (label, path, status)
        self.ids.setdefault(label, []).append(request_id)
        return request_id


def audit_traffic(mesh: ti.Mesh) -> Sent:
    sent = Sent()
    for _ in range(3):
        sent.via(mesh, "admin", "GET", "/admin/users")
    for n in range(2):
        sent.via(mesh, "forbidden", "GET", f"/admin/forbidden/{n}", expect=403)
    sent.via(mesh, "refunds", "GET", "/admin/refunds", expect=403)
    for _ in range(2):
        sent.via(mesh, "reports", "GET", "/reports/daily")
    sent.via(mesh, "jwt", "GET", "/jwt/me", expect=401)
    sent.via(mesh, "jwt", "GET", "/jwt/me", {"authorization": f"Bearer {mesh.issuer.token('j', expires_in=-120)}"}, expect=401)
    sent.via(mesh, "jwt", "GET", "/jwt/me", {"authorization": f"Bearer {mesh.forger.token('j')}"}, expect=401)
    sent.via(mesh, "ambiguous", "GET", "/admin/x/%2e%2e/users")
    for n in range(ROUTINE):
        sent.via(mesh, "routine", "GET", f"/products/{n}")
    status, _, _ = mesh.plaintext("GET", "/orders", {"x-request-id": "plain-1"})
    assert status == 200
    for client in (None, "rogue", "expired"):
        address = mesh.handshake(mesh.certs[client] if client else None)
        assert mesh.server.wait_exactly(mesh.network_record_of(address), 1, settle=0.1)
    mesh.server.wait_records(lambda r: r.get("request", {}).get("id") == sent.ids["ambiguous"][0])
    return sent


@pytest.fixture(scope="module")
def audit_trail(tmp_path_factory):
    mesh = ti.Mesh(tmp_path_factory.mktemp("answers"), adjust_server=ti.set_directions, adjust_client=ti.with_client_plugin)
    try:
        sent = audit_traffic(mesh)
    finally:
        logs = stop(mesh)
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        # The records only: Envoy's other log lines hold this machine's paths and ports.
        with open(GOLDEN / "mesh.log", "w") as out:
            for log in logs:
                out.writelines(line for line in open(log) if harness.RECORD_PREFIX in line)
    return logs, sent


def rows(summary: dict, table: str, **match) -> list[dict]:
    return [r for r in summary["tables"][table] if all(r.get(k) == v for k, v in match.items())]


def test_summary_counts_what_was_sent_once_per_request(audit_trail):
    logs, sent = audit_trail
    s = json.loads(run("summary", "--json", "--hops", *logs).stdout)
    # Sensitive access: the three admin requests, each recorded by both sidecars, counted once.
    admin = rows(s, "sensitive", caller=ti.CLIENT_ID, path="/admin/users", method="GET")
    assert len(admin) == 1 and admin[0]["requests"] == 3 + 1, admin  # and the ambiguous one
    assert admin[0]["namespace"] == "shop" and admin[0]["denied"] == 0
    hops = {r["request_id"]: r for r in s["tables"]["hops"]}
    for request_id in sent.ids["admin"]:
        assert hops[request_id]["hops"] == 2
        assert hops[request_id]["route"].index("outbound") < hops[request_id]["route"].index("inbound")
    assert s["request_records"] > s["requests"]
    # Denials by the policy that decided, and the caller the server saw.
    forbidden = rows(s, "denials", policy="ns[pay]-policy[deny-forbidden]-rule[0]", by="rbac")
    assert [(r["caller"], r["count"]) for r in forbidden] == [(ti.CLIENT_ID, 2)]
    refunds = rows(s, "denials", policy="ns[pay]-policy[deny-shop-to-refunds]-rule[0]")
    assert [(r["caller"], r["count"]) for r in refunds] == [(ti.CLIENT_ID, 1)]
    assert sum(r["count"] for r in s["tables"]["denials"]) == 3, "a denial counted at both hops"
    dry = rows(s, "dry_run", policy="ns[pay]-policy[dry-deny-reports]-rule[0]")
    assert [(r["caller"], r["count"]) for r in dry] == [(ti.CLIENT_ID, 2)]
    reasons = {r["reason"]: r["count"] for r in s["tables"]["auth_failures"]}
    assert reasons == {"Jwt_is_missing": 1, "Jwt_is_expired": 1, "Jwt_verification_fails": 1}
    tls = {r["reason"]: r["count"] for r in s["tables"]["tls_failures"]}
    assert tls == {"no_client_certificate": 1, "certificate_untrusted": 1, "certificate_expired": 1}
    assert all(r["source"] == "127.0.0.1" for r in s["tables"]["tls_failures"])
    ambiguous = rows(s, "ambiguous", ambiguity="path_dot_segment")
    assert sum(r["count"] for r in ambiguous) == 1
    # The plaintext caller is known by its address.
    assert rows(s, "sensitive", caller="127.0.0.1", path="/orders")[0]["requests"] == 1
    # Three plugins applied their configuration: two on the server (HTTP, network), one on the client.
    applied = rows(s, "config", change="applied")
    assert sorted(r["instance"] for r in applied) == ["client-sidecar", "server-sidecar", "server-sidecar"]
    # Completeness: the server sampled out exactly the routine requests.
    server = rows(s, "completeness", instance="server-sidecar")[0]
    assert server["sampled_out"] == ROUTINE
    assert s["completeness"]["totals"]["sampled_out"] >= ROUTINE
    assert s["completeness"]["not_written"] == sum(
        s["completeness"]["totals"].get(n, 0) for n in ("sampled_out", "dropped", "suppressed", "hidden", "sink_errors")
    )
    # Every record read from both logs is in some kind's count.
    assert sum(s["records_by_kind"].values()) == s["records"]


def test_summary_window_and_csv(audit_trail):
    logs, _ = audit_trail
    whole = json.loads(run("summary", "--json", *logs).stdout)
    after = json.loads(run("summary", "--json", "--since", "2999-01-01", *logs).stdout)
    assert after["records"] == 0 and after["read"]["outside_window"] == whole["records"]
    before = json.loads(run("summary", "--json", "--until", whole["last"], *logs).stdout)
    assert 0 < before["records"] < whole["records"]
    table = list(csv.DictReader(io.StringIO(run("summary", "--csv", "denials", *logs).stdout)))
    assert [(r["policy"], int(r["count"])) for r in table] == [(r["policy"], r["count"]) for r in whole["tables"]["denials"]]
    bad = run("summary", "--csv", "nope", *logs, check=False)
    assert bad.returncode == 2 and "sensitive, open_streams, denials" in bad.stderr
    bad = run("summary", "--since", "yesterday", *logs, check=False)
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_policy_impact_names_who_a_dry_run_policy_would_deny(audit_trail):
    logs, sent = audit_trail
    impact = json.loads(run("policy", "impact", "--json", *logs).stdout)
    [policy] = [p for p in impact["policies"] if p["would_deny"]]
    assert policy["policy"] == "ns[pay]-policy[dry-deny-reports]-rule[0]"
    assert policy["prefix"] == "istio_dry_run_deny_"
    assert policy["would_deny"] == 2 and policy["callers"] == {ti.CLIENT_ID: 2}
    assert policy["endpoints"] == {"GET /reports/daily": 2}
    assert sorted(e["request_id"] for e in policy["latest"]) == sorted(sent.ids["reports"])


def test_policy_suggest_refuses_a_sampled_trail(audit_trail):
    logs, _ = audit_trail
    out = run("policy", "suggest", "--workload", ti.SERVER_ID, "--selector", "app=pay", *logs, check=False)
    assert out.returncode == 1, out.stdout
    assert "refused" in out.stderr and "did not write" in out.stderr
    draft = run("policy", "suggest", "--workload", ti.SERVER_ID, "--selector", "app=pay", "--allow-incomplete", *logs)
    assert "# WARNING: INCOMPLETE TRAIL" in draft.stdout


GOLDEN_OUTPUTS = {
    "mesh.summary.txt": ["summary", "--hops", "--top", "0"],
    "mesh.summary.json": ["summary", "--json", "--hops"],
    "mesh.denials.csv": ["summary", "--csv", "denials"],
    "mesh.impact.txt": ["policy", "impact"],
}


@pytest.mark.parametrize("name", sorted(GOLDEN_OUTPUTS))
def test_golden_answers_on_the_captured_trail(audit_trail, name):
    """The answers on a trail this suite captured, pinned: a change shows as a diff to review."""
    trail = GOLDEN / "mesh.log"
    got = run(*GOLDEN_OUTPUTS[name], str(trail)).stdout
    if UPDATE:
        (GOLDEN / name).write_text(got)
    assert got == (GOLDEN / name).read_text()


# --- policy suggest, round trip ---------------------------------------------------------


def https(mesh: ti.Mesh, cert: tuple, method: str, path: str) -> int:
    """A request straight to the server's mTLS port with another workload's certificate."""
    conn = http.client.HTTPSConnection("127.0.0.1", mesh.ports["mtls"], context=mesh.tls_context(cert), timeout=5)
    try:
        conn.request(method, path, headers={"host": "pay", "x-request-id": uuid.uuid4().hex})
        return conn.getresponse().status
    finally:
        conn.close()


# (caller, method, path): the learning window's traffic. Seven item ids exceed the default
# threshold of five values in one segment; three cart ids do not.
OBSERVED = (
    [("checkout", "GET", f"/api/items/{n}") for n in range(7)]
    + [("checkout", "POST", "/api/orders"), ("checkout", "GET", "/admin/users")]
    + [("cart", "GET", f"/api/cart/{n}") for n in ("a1", "b2", "c3")]
)
NOT_OBSERVED = [
    ("checkout", "DELETE", "/api/items/1"),
    ("cart", "GET", "/api/items/1"),
    ("checkout", "GET", "/admin/other"),
    ("cart", "GET", "/api/cart/d4"),
    ("checkout", "GET", "/api/items/1/details"),
]


def replay(mesh: ti.Mesh, cart_cert: tuple, traffic) -> list[int]:
    statuses = []
    for caller, method, path in traffic:
        if caller == "checkout":
            statuses.append(mesh.via_client(method, path, {"x-request-id": uuid.uuid4().hex})[0])
        else:
            statuses.append(https(mesh, cart_cert, method, path))
    return statuses


def enforcing(policy: dict):
    """The server's filters with the suggested policy enforced, as Istio compiles an ALLOW policy."""

    def adjust(config: dict) -> None:
        ti.set_directions(config)
        for filters in ti.http_filters(config):
            at = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.rbac")
            filters[at] = istio_rbac.rbac_filter(policy)

    return adjust


def test_policy_suggest_round_trip(tmp_path):
    (tmp_path / "learning").mkdir()
    (tmp_path / "enforced").mkdir()
    learning = ti.Mesh(tmp_path / "learning", adjust_server=ti.with_server_plugin(LEARNING_PLUGIN))
    cart = learning.ca.issue("cart", CART_ID)
    try:
        assert replay(learning, cart, OBSERVED) == [200] * len(OBSERVED)
    finally:
        logs = stop(learning)
    out = run("policy", "suggest", "--workload", ti.SERVER_ID, "--selector", "app=pay", *logs)
    policy = yaml.safe_load(out.stdout)
    jsonschema.validate(policy["spec"], crd_schema("AuthorizationPolicy", policy["apiVersion"])["properties"]["spec"])
    assert policy["metadata"] == {"name": "api-observed", "namespace": "pay"}
    rules = {r["from"][0]["source"]["principals"][0]: r["to"] for r in policy["spec"]["rules"]}
    assert set(rules) == {ti.CLIENT_ID.removeprefix("spiffe://"), CART_ID.removeprefix("spiffe://")}
    checkout = {tuple(t["operation"]["methods"]): t["operation"]["paths"] for t in rules[ti.CLIENT_ID.removeprefix("spiffe://")]}
    assert checkout == {("GET",): ["/admin/users", "/api/items/{*}"], ("POST",): ["/api/orders"]}
    cart_paths = rules[CART_ID.removeprefix("spiffe://")][0]["operation"]["paths"]
    assert cart_paths == ["/api/cart/a1", "/api/cart/b2", "/api/cart/c3"], "three values stay literal"
    assert "# spiffe://cluster.local/ns/shop/sa/checkout: 9 requests" in out.stdout

    enforced = ti.Mesh(tmp_path / "enforced", adjust_server=enforcing(policy))
    cart = enforced.ca.issue("cart2", CART_ID)
    try:
        assert replay(enforced, cart, OBSERVED) == [200] * len(OBSERVED)
        # A value the generalisation admits, and what was never observed.
        assert replay(enforced, cart, [("checkout", "GET", "/api/items/99")]) == [200]
        assert replay(enforced, cart, NOT_OBSERVED) == [403] * len(NOT_OBSERVED)
    finally:
        stop(enforced)


def test_policy_suggest_keeps_sensitive_prefixes_literal(tmp_path):
    """Many values under an audit rule's prefix: `{*}` below the prefix with the plugin's
    configuration given, every path as written without it."""
    lines = []
    for n in range(6):
        lines.append(
            json.dumps(
                {
                    "v": 1,
                    "ts": f"2026-12-01T10:00:0{n}.000Z",
                    "kind": "access",
                    "instance": "api-1",
                    "stream": "00000000000000aa",
                    "seq": n,
                    "direction": "inbound",
                    "why": {"reason": "rule", "rule": "admin", "action": "audit", "sample_rate": 1},
                    "request": {"id": f"r{n}", "method": "GET", "path": f"/admin/user{n}"},
                    "response": {"code": 200},
                    "peer": {"mtls": True, "principal": ti.CLIENT_ID, "local_principal": ti.SERVER_ID},
                }
            )
        )
    lines.append(
        json.dumps(
            {
                "v": 1,
                "ts": "2026-12-01T10:00:10.000Z",
                "kind": "accounting",
                "instance": "api-1",
                "stream": "00000000000000aa",
                "seq": 6,
                "interval": {"start": "x", "end": "y", "first_seq": 0, "config": "sha256:" + "0" * 64},
                "totals": {"requests": 6, "records": 6},
                "by_rule": {},
            }
        )
    )
    trail = tmp_path / "trail.log"
    trail.write_text("\n".join(lines) + "\n")
    args = ["policy", "suggest", "--workload", ti.SERVER_ID, "--selector", "app=api", str(trail)]
    literal = yaml.safe_load(run(*args).stdout)
    assert literal["spec"]["rules"][0]["to"][0]["operation"]["paths"] == [f"/admin/user{n}" for n in range(6)]
    config = tmp_path / "plugin.json"
    config.write_text(json.dumps({"rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}]}))
    below = yaml.safe_load(run(*args, "--config", str(config)).stdout)
    assert below["spec"]["rules"][0]["to"][0]["operation"]["paths"] == ["/admin/{*}"]
    config.write_text(
        json.dumps({"rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin/user"}]}, "action": "audit"}]})
    )
    within = yaml.safe_load(run(*args, "--config", str(config)).stdout)
    assert within["spec"]["rules"][0]["to"][0]["operation"]["paths"] == [f"/admin/user{n}" for n in range(6)]
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_demo_ends_with_the_answers():
    """scripts/demo.sh's last step (the README's "Reading the trail" shows its output)."""
    out = subprocess.run([sys.executable, str(harness.E2E / "demo.py")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for heading in ("Sensitive endpoints, by caller", "Denials, by policy and caller", "What dry-run policies would have denied"):
        assert heading in text
    assert "ns[pay]-policy[dry-deny-reports]-rule[0] (istio_dry_run_deny_): would deny 2 requests from 1 caller" in text
    report = Path(text.rsplit("The report: ", 1)[1].strip())
    assert report.read_text().startswith("<!DOCTYPE html>")
    policy = yaml.safe_load(text.split("--selector app=pay ", 1)[1].split("\n", 1)[1].split("\nEnvoy's logs:", 1)[0])
    assert policy["kind"] == "AuthorizationPolicy"
    shutil.rmtree(report.parent, ignore_errors=True)

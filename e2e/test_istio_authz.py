"""Istio's authorization machinery, in the filter layouts Istio's builder generates
(pilot/pkg/security/authz/builder and its golden testdata), in front of the real plugin.

One Envoy, named like an Istio sidecar, with:
- `inbound` (INBOUND): CUSTOM (an RBAC filter whose shadow DENY rules select requests,
  prefix `istio_ext_authz_`, then ext_authz enabled by that metadata; Istio 1.10 and later,
  with the provider in the policy name as from 1.30), AUDIT (RBAC `action: LOG`, with a
  dry-run AUDIT policy as its shadow rules), DENY (with a dry-run DENY policy, prefix
  `istio_dry_run_deny_`), ALLOW, then meshaudit at rate 0 with shadow results on;
- `legacy` (INBOUND): CUSTOM as Istio before 1.10 generated it (no shadow prefix, the
  ext_authz filter enabled by `shadow_effective_policy_id`), then ALLOW;
- `outbound` (OUTBOUND): AUDIT only, on a route and a cluster carrying Istio's
  `filter_metadata.istio.config` (a VirtualService, a DestinationRule);
- `tcp-audit` and `tcp-deny`: a TCP service with AUDIT, and one with DENY, compiled into
  Envoy's network RBAC filter (stat prefix `tcp.`), then meshaudit in network mode.
The ext_authz server is a small local HTTP service that denies paths containing "deny".
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import harness
import pytest

NODE_ID = "sidecar~127.0.0.1~reviews-1.shop~shop.svc.cluster.local"
AUDIT = "ns[shop]-policy[audit-admin]-rule[0]"
DENY = "ns[shop]-policy[deny-forbidden]-rule[0]"
ALLOW = "ns[shop]-policy[allow-shop]-rule[0]"
CUSTOM = "istio-ext-authz-opa-ns[shop]-policy[ext-check]-rule[0]"
LEGACY_CUSTOM = "istio-ext-authz-ns[shop]-policy[ext-check]-rule[0]"
DRY_DENY = "ns[shop]-policy[dry-deny-reports]-rule[0]"
DRY_AUDIT = "ns[shop]-policy[dry-audit-reports]-rule[0]"
VS = "/apis/networking.istio.io/v1/namespaces/shop/virtual-service/reviews-route"
DR = "/apis/networking.istio.io/v1/namespaces/shop/destination-rule/reviews-tls"
PLUGIN = {"default_sample_rate": 0, "authorization": {"shadow_results": True}}


def prefixes(*paths: str) -> dict:
    return {
        "permissions": [{"or_rules": {"rules": [{"url_path": {"path": {"prefix": p}}} for p in paths]}}],
        "principals": [{"any": True}],
    }


def ext_authz(port: int, enabled_by: str, prefix: str) -> dict:
    """The ext_authz filter of Istio's CUSTOM action: it runs only for requests the CUSTOM
    RBAC filter's shadow rules selected."""
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "http_service": {"server_uri": {"uri": f"http://127.0.0.1:{port}", "cluster": "ext_authz", "timeout": "2s"}},
            "filter_enabled_metadata": {
                "filter": "envoy.filters.http.rbac",
                "path": [{"key": enabled_by}],
                "value": {"string_match": {"prefix": prefix}},
            },
        },
    }


def custom_pair(port: int, legacy: bool) -> list[dict]:
    policy = LEGACY_CUSTOM if legacy else CUSTOM
    shadow = {"action": "DENY", "policies": {policy: prefixes("/ext")}}
    if legacy:
        return [
            harness.rbac_filter(None, None, shadow_rules=shadow),
            ext_authz(port, "shadow_effective_policy_id", "istio-ext-authz"),
        ]
    return [
        harness.rbac_filter(None, None, shadow_rules=shadow, shadow_rules_stat_prefix="istio_ext_authz_"),
        ext_authz(port, "istio_ext_authz_shadow_effective_policy_id", "istio-ext-authz-opa"),
    ]


def hcm(name: str, filters: list[dict], routes: list[dict], template: dict) -> dict:
    config = json.loads(json.dumps(template))
    typed = config["typed_config"]
    typed["stat_prefix"] = name
    typed.pop("access_log", None)
    wasm = next(f for f in typed["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    wasm["typed_config"]["config"]["configuration"]["value"] = json.dumps(PLUGIN)
    router = typed["http_filters"][-1]
    typed["http_filters"] = [*filters, wasm, router]
    typed["route_config"] = {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]}
    return config


def tcp_listener(name: str, port: int, rules: dict, network_wasm: dict) -> dict:
    return {
        "name": name,
        "traffic_direction": "INBOUND",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.rbac",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                            "stat_prefix": "tcp.",
                            "rules": rules,
                        },
                    },
                    network_wasm,
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                            "stat_prefix": name,
                            "cluster": "backend",
                        },
                    },
                ]
            }
        ],
    }


class Layout:
    def __init__(self) -> None:
        self.upstream = harness.Upstream()
        # Denies the paths that contain "deny".
        self.authz = harness.ExtAuthzServer(lambda path, _headers: "deny" in path)
        authz_port = self.authz.port
        self.ports = {name: harness.free_port() for name in ("inbound", "legacy", "outbound", "tcp-audit", "tcp-deny")}
        config = harness.load_config(self.upstream.port, self.ports["inbound"], harness.free_port())
        config["node"]["id"] = NODE_ID
        template = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        wasm = harness.wasm_filter(config)["typed_config"]["config"]
        network_wasm = {
            "name": "envoy.filters.network.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                "config": {**wasm, "name": "meshaudit-network", "root_id": "network"},
            },
        }
        backend = [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
        inbound = [
            *custom_pair(authz_port, legacy=False),
            harness.rbac_filter(
                {AUDIT: prefixes("/admin")},
                "LOG",
                shadow_rules={"action": "LOG", "policies": {DRY_AUDIT: prefixes("/reports/audited")}},
            ),
            harness.rbac_filter(
                {DENY: prefixes("/admin/forbidden")},
                "DENY",
                shadow_rules={"action": "DENY", "policies": {DRY_DENY: prefixes("/reports/denied")}},
                shadow_rules_stat_prefix="istio_dry_run_deny_",
            ),
            harness.rbac_filter(
                {ALLOW: prefixes("/admin/users", "/public", "/ext", "/reports")},
                None,
                shadow_rules_stat_prefix="istio_dry_run_allow_",
            ),
        ]
        legacy = [*custom_pair(authz_port, legacy=True), harness.rbac_filter({ALLOW: prefixes("/")}, None)]
        outbound_routes = [
            {
                "name": "reviews.shop.svc.cluster.local:80",
                "match": {"prefix": "/"},
                "route": {"cluster": "outbound|80||reviews.shop.svc.cluster.local"},
                "metadata": {"filter_metadata": {"istio": {"config": VS}}},
            }
        ]
        outbound = [harness.rbac_filter({AUDIT: prefixes("/admin")}, "LOG", shadow_rules_stat_prefix="istio_dry_run_allow_")]

        def http_listener(name: str, direction: str, filters: list[dict], routes: list[dict]) -> dict:
            return {
                "name": name,
                "traffic_direction": direction,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.ports[name]}},
                "filter_chains": [{"filters": [hcm(name, filters, routes, template)]}],
            }

        config["static_resources"]["listeners"] = [
            http_listener("inbound", "INBOUND", inbound, backend),
            http_listener("legacy", "INBOUND", legacy, backend),
            http_listener("outbound", "OUTBOUND", outbound, outbound_routes),
            tcp_listener(
                "tcp-audit",
                self.ports["tcp-audit"],
                {"action": "LOG", "policies": {AUDIT: {"permissions": [{"any": True}], "principals": [{"any": True}]}}},
                network_wasm,
            ),
            tcp_listener(
                "tcp-deny",
                self.ports["tcp-deny"],
                {"action": "DENY", "policies": {DENY: {"permissions": [{"any": True}], "principals": [{"any": True}]}}},
                network_wasm,
            ),
        ]
        config["static_resources"]["clusters"] += [
            harness.static_cluster(
                "outbound|80||reviews.shop.svc.cluster.local",
                self.upstream.port,
                metadata={"filter_metadata": {"istio": {"config": DR}}},
            ),
            harness.static_cluster("ext_authz", authz_port),
        ]
        self.sent = 0
        self.envoy = harness.Envoy(config, Path(tempfile.mkdtemp(prefix="meshaudit-istio-")))
        self.envoy.wait_ready()

    def get(self, listener: str, path: str, recorded: bool = True) -> tuple[int, list[dict]]:
        """Sends `GET path` to `listener` with a request id of its own; returns the status and
        the request's records (waiting for one if `recorded`, then watching for more)."""
        import http.client

        self.sent += 1
        request_id = f"{listener}{path}#{self.sent}"
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[listener], timeout=10)
        conn.request("GET", path, headers={"x-request-id": request_id})
        status = conn.getresponse().status
        conn.close()
        records = self.envoy.wait_exactly(
            lambda r: r.get("request", {}).get("id") == request_id, int(recorded), settle=0.3 if recorded else 1.0
        )
        return status, records

    def stop(self) -> None:
        self.envoy.stop()
        self.upstream.stop()
        self.authz.stop()


@pytest.fixture(scope="module")
def layout():
    lay = Layout()
    yield lay
    lay.stop()


only = harness.only


# What the dry-run policies of the inbound layout leave on a request they do not match: the
# dry-run DENY engine's "allowed", and the dry-run AUDIT (shadow LOG) engine's, which has no prefix.
UNMATCHED_DRY_RUNS = [{"result": "allowed", "prefix": "istio_dry_run_deny_"}, {"result": "allowed"}]


def decision(r: dict) -> dict:
    """`authz` without the dry-run results, which `shadows` checks."""
    return {k: v for k, v in r["authz"].items() if k != "shadow"}


def shadows(r: dict) -> list[dict]:
    return sorted(r["authz"].get("shadow", []), key=json.dumps)


def istio_policy(policy: str, namespace: str, name: str) -> dict:
    return {"policy": policy, "policy_namespace": namespace, "policy_name": name, "policy_rule": 0}


def test_no_batch_fell_back(layout):
    layout.get("inbound", "/admin/users")
    assert harness.BATCH_FALLBACK not in layout.envoy.log()


def test_audit_and_allow_matched(layout):
    status, records = layout.get("inbound", "/admin/users")
    assert status == 200
    r = only(records)
    assert (r["kind"], r["why"]["reason"], r["why"]["action"]) == ("access", "mesh_audit_policy", "audit")
    assert r["direction"] == "inbound"
    # Envoy kept the ALLOW filter's id over the AUDIT filter's: the record says it cannot tell whose.
    assert decision(r) == {
        "decision": "allowed",
        "by": "rbac",
        "basis": "allow_or_audit_policy",
        "unattributed_policy": ALLOW,
        "audit": {"matched": True},
    }
    assert "virtual_service" not in r.get("route", {}), "Istio's default inbound route names no VirtualService"
    assert shadows(r) == sorted(UNMATCHED_DRY_RUNS, key=json.dumps)


def test_audit_matched_and_no_allow_policy_did(layout):
    status, records = layout.get("inbound", "/admin/other")
    assert status == 403
    r = only(records)
    assert (r["kind"], r["why"]["reason"]) == ("denied", "security_outcome")
    assert r["response"]["code_details"] == "rbac_access_denied_matched_policy[none]"
    assert decision(r) == {
        "decision": "denied",
        "by": "rbac",
        "basis": "no_allow_policy_matched",
        "audit": {"matched": True, **istio_policy(AUDIT, "shop", "audit-admin")},
    }
    assert shadows(r) == sorted(UNMATCHED_DRY_RUNS, key=json.dumps)


def test_audit_and_deny_matched(layout):
    status, records = layout.get("inbound", "/admin/forbidden")
    assert status == 403
    r = only(records)
    assert r["kind"] == "denied"
    assert decision(r) == {
        "decision": "denied",
        "by": "rbac",
        "basis": "deny_policy",
        **istio_policy(DENY, "shop", "deny-forbidden"),
        "audit": {"matched": True},
    }
    assert shadows(r) == sorted(UNMATCHED_DRY_RUNS, key=json.dumps)


def test_allowed_routine_traffic_stays_unrecorded(layout):
    status, records = layout.get("inbound", "/public/page", recorded=False)
    assert (status, records) == (200, [])


def test_a_request_no_allow_policy_matched_names_no_policy(layout):
    status, records = layout.get("inbound", "/elsewhere")
    assert status == 403
    r = only(records)
    assert decision(r) == {"decision": "denied", "by": "rbac", "basis": "no_allow_policy_matched"}
    assert shadows(r) == sorted(UNMATCHED_DRY_RUNS, key=json.dumps)


@pytest.mark.parametrize("listener", ["inbound", "legacy"])
def test_custom_is_a_check_not_a_dry_run(layout, listener):
    """Both CUSTOM shapes: allowed by the external authorizer, the request is routine (no
    false `shadow_denied`); denied by it, the record names the authorizer and the policy."""
    status, records = layout.get(listener, "/ext/fine", recorded=False)
    assert (status, records) == (200, [])
    status, records = layout.get(listener, "/ext/deny-me")
    assert status == 403
    r = only(records)
    assert (r["kind"], r["why"]["reason"]) == ("denied", "security_outcome")
    assert r["response"]["code_details"] == "ext_authz_denied"
    check = {"answer": "denied", **istio_policy("ns[shop]-policy[ext-check]-rule[0]", "shop", "ext-check")}
    if listener == "inbound":
        check["provider"] = "opa"
    assert r["authz"] == {"decision": "denied", "by": "ext_authz", "basis": "ext_authz", "status": 403, "ext_authz": check}


def test_dry_run_deny_is_a_shadow_denial(layout):
    status, records = layout.get("inbound", "/reports/denied")
    assert status == 200
    r = only(records)
    assert r["kind"] == "shadow_denied"
    assert r["authz"]["basis"] == "allow_policy"
    assert r["authz"]["policy"] == ALLOW
    assert {"result": "denied", "prefix": "istio_dry_run_deny_", **istio_policy(DRY_DENY, "shop", "dry-deny-reports")} in r[
        "authz"
    ]["shadow"]


def test_dry_run_audit_is_no_shadow_allow(layout):
    status, records = layout.get("inbound", "/reports/audited", recorded=False)
    assert (status, records) == (200, []), "a dry-run AUDIT match is neither a shadow allow nor an AUDIT"


def test_outbound_route_names_the_virtual_service_and_destination_rule(layout):
    status, records = layout.get("outbound", "/admin/settings")
    assert status == 200
    r = only(records)
    assert r["direction"] == "outbound"
    assert r["why"]["reason"] == "mesh_audit_policy"
    assert r["route"] == {
        "name": "reviews.shop.svc.cluster.local:80",
        "cluster": "outbound|80||reviews.shop.svc.cluster.local",
        "virtual_service": {"namespace": "shop", "name": "reviews-route"},
        "destination_rule": {"namespace": "shop", "name": "reviews-tls"},
    }
    # AUDIT only: the only id Envoy has is the AUDIT policy's, and still it cannot say so.
    assert r["authz"]["unattributed_policy"] == AUDIT
    status, records = layout.get("outbound", "/catalog", recorded=False)
    assert (status, records) == (200, [])


def tcp_exchange(port: int) -> tuple[str, bytes]:
    return harness.exchange(port, b"GET / HTTP/1.0\r\n\r\n")


def tcp_records(layout, local: str) -> list[dict]:
    return layout.envoy.wait_exactly(lambda r: r.get("source", {}).get("address") == local and "connection" in r, 1, settle=0.3)


def test_tcp_audit_policy_is_recorded_by_the_network_mode(layout):
    local, answer = tcp_exchange(layout.ports["tcp-audit"])
    assert answer.startswith(b"HTTP/1."), answer[:40]
    r = only(tcp_records(layout, local))
    assert (r["kind"], r["why"]["reason"], r["direction"]) == ("connection", "mesh_audit_policy", "inbound")
    assert r["authz"] == {"decision": "allowed", "by": "rbac", "basis": "not_denied", "audit": {"matched": True}}


def test_tcp_denial_is_recorded_by_the_network_mode(layout):
    local, answer = tcp_exchange(layout.ports["tcp-deny"])
    assert answer == b""
    r = only(tcp_records(layout, local))
    assert (r["kind"], r["why"]["reason"]) == ("denied", "security_outcome")
    assert r["authz"] == {
        "decision": "denied",
        "by": "rbac",
        "basis": "deny_policy",
        **istio_policy(DENY, "shop", "deny-forbidden"),
    }

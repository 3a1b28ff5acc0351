"""Who called, and what the mesh decided: two real Envoys as client and server sidecars.

The client sidecar takes plain HTTP and calls the server sidecar over mTLS with a SPIFFE
workload certificate, as Istio's sidecars do. The server runs jwt_authn (local JWKS),
ext_authz (a small local service, and one that is down), RBAC with enforced, principal-based
and Istio dry-run (shadow) policies, then meshaudit as an HTTP filter, and meshaudit again as
a network filter for TLS handshake failures. Certificates and tokens are made at test time.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import http.server
import socket
import ssl
import struct

import harness
import pki
import pytest

HMAC_KEY = "e2e-hmac-key-0123456789abcdef"
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
CLIENT_ID = pki.spiffe("shop", "checkout")
SERVER_ID = pki.spiffe("pay", "api")

HTTP_PLUGIN = {
    "default_sample_rate": 0,
    "authorization": {"shadow_results": True},
    "authentication": {"jwt_payload_metadata_key": "jwt_payload", "jwt_subject": "hash"},
    "rules": [
        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"},
        {"name": "plaintext-callers", "match": {"mtls": False}, "action": "audit"},
        {"name": "jwt-api", "match": {"paths": [{"prefix": "/jwt"}]}, "action": "audit"},
    ],
}


def address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def static_cluster(name: str, port: int, tls: dict | None = None) -> dict:
    if tls:
        return harness.static_cluster(name, port, transport_socket={"name": "envoy.transport_sockets.tls", "typed_config": tls})
    return harness.static_cluster(name, port)


def wasm_config(name: str, root_id: str, plugin: dict) -> dict:
    import json

    return {
        "name": name,
        "root_id": root_id,
        "vm_config": {
            "vm_id": "meshaudit",
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(harness.WASM)}},
            # The HMAC key reaches the VM as an environment variable, never in the plugin config.
            "environment_variables": {"key_values": {"MESHAUDIT_HMAC_KEY": HMAC_KEY}},
        },
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(plugin)},
    }


def ext_authz_filter(name: str, cluster: str, port: int) -> dict:
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "http_service": {
                "server_uri": {"uri": f"http://127.0.0.1:{port}", "cluster": cluster, "timeout": "1s"},
                "authorization_request": {"allowed_headers": {"patterns": [{"exact": "x-ext-authz"}]}},
            },
        },
    }


def disabled(*filters: str) -> dict:
    return {
        f: {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", "disabled": True}
        for f in filters
    }


def policy(prefix: str, principal: str | None = None) -> dict:
    principals = [{"authenticated": {"principal_name": {"exact": principal}}}] if principal else [{"any": True}]
    return {"permissions": [{"url_path": {"path": {"prefix": prefix}}}], "principals": principals}


def server_hcm(stat_prefix: str, issuer: pki.JwtIssuer, ports: dict) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            # Istio's sidecars forward the client certificate details; the plugin never trusts them.
            "forward_client_cert_details": "SANITIZE_SET",
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "pay",
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {"prefix": "/extauthz/live"},
                                "route": {"cluster": "backend"},
                                "typed_per_filter_config": disabled("ext-authz-dead"),
                            },
                            {
                                "match": {"prefix": "/extauthz/dead"},
                                "route": {"cluster": "backend"},
                                "typed_per_filter_config": disabled("ext-authz-live"),
                            },
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": "backend"},
                                "typed_per_filter_config": disabled("ext-authz-live", "ext-authz-dead"),
                            },
                        ],
                    }
                ]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.jwt_authn",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                        "providers": {
                            "test": {
                                "issuer": issuer.issuer,
                                "audiences": ["meshaudit"],
                                "local_jwks": {"inline_string": issuer.jwks},
                                "payload_in_metadata": "jwt_payload",
                            }
                        },
                        "rules": [{"match": {"prefix": "/jwt"}, "requires": {"provider_name": "test"}}],
                    },
                },
                ext_authz_filter("ext-authz-live", "ext_authz", ports["ext_authz"]),
                ext_authz_filter("ext-authz-dead", "ext_authz_dead", ports["dead"]),
                harness.rbac_filter(
                    {
                        "ns[pay]-policy[deny-forbidden]-rule[0]": policy("/admin/forbidden"),
                        "ns[pay]-policy[deny-shop-to-refunds]-rule[0]": policy("/admin/refunds", CLIENT_ID),
                    },
                    # An Istio dry-run DENY policy: evaluated, reported in metadata, not enforced.
                    shadow_rules={
                        "action": "DENY",
                        "policies": {"ns[pay]-policy[dry-deny-reports]-rule[0]": policy("/reports")},
                    },
                    shadow_rules_stat_prefix="istio_dry_run_deny_",
                ),
                {
                    "name": "envoy.filters.http.wasm",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": wasm_config("meshaudit", "meshaudit", HTTP_PLUGIN),
                    },
                },
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        },
    }


def downstream_mtls(certs: dict) -> dict:
    """The server side of mTLS: the server's certificate, client certificates required."""
    return {
        "@type": f"{TLS}.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [
                {"certificate_chain": {"filename": str(certs["server"][0])}, "private_key": {"filename": str(certs["server"][1])}}
            ],
            "validation_context": {"trusted_ca": {"filename": str(certs["ca"])}},
        },
    }


def server_config(certs: dict, issuer: pki.JwtIssuer, ports: dict) -> dict:
    downstream_tls = downstream_mtls(certs)
    network_wasm = {
        "name": "envoy.filters.network.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
            "config": wasm_config("meshaudit-network", "network", {}),
        },
    }
    return {
        "node": {"id": "server-sidecar", "cluster": "pay"},
        "admin": {"address": address(ports["server_admin"])},
        "static_resources": {
            "listeners": [
                {
                    "name": "inbound-mtls",
                    "address": address(ports["mtls"]),
                    "filter_chains": [
                        {
                            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": downstream_tls},
                            "filters": [network_wasm, server_hcm("inbound_mtls", issuer, ports)],
                        }
                    ],
                },
                # Istio PERMISSIVE mode: the same service also reachable in plaintext.
                {
                    "name": "inbound-plain",
                    "address": address(ports["plain"]),
                    "filter_chains": [
                        {
                            "filters": [server_hcm("inbound_plain", issuer, ports)],
                        }
                    ],
                },
            ],
            "clusters": [
                static_cluster("backend", ports["upstream"]),
                static_cluster("ext_authz", ports["ext_authz"]),
                static_cluster("ext_authz_dead", ports["dead"]),
            ],
        },
    }


def client_config(certs: dict, ports: dict) -> dict:
    upstream_tls = {
        "@type": f"{TLS}.UpstreamTlsContext",
        "sni": "pay.local",
        "common_tls_context": {
            # Istio's sidecars speak TLS 1.3 to each other; Envoy's client default tops out at 1.2.
            "tls_params": {"tls_maximum_protocol_version": "TLSv1_3"},
            "tls_certificates": [
                {"certificate_chain": {"filename": str(certs["client"][0])}, "private_key": {"filename": str(certs["client"][1])}}
            ],
            "validation_context": {
                "trusted_ca": {"filename": str(certs["ca"])},
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": SERVER_ID}}],
            },
        },
    }
    return {
        "node": {"id": "client-sidecar", "cluster": "shop"},
        "admin": {"address": address(ports["client_admin"])},
        "static_resources": {
            "listeners": [
                {
                    "name": "outbound",
                    "address": address(ports["client"]),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "outbound",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "pay",
                                                    "domains": ["*"],
                                                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "pay"}}],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [static_cluster("pay", ports["mtls"], upstream_tls)],
        },
    }


class Mesh:
    """`adjust_server` and `adjust_client`, when given, change each sidecar's bootstrap
    before it starts (other tests reuse the mesh with another plugin or filter)."""

    def __init__(self, workdir, adjust_server=None, adjust_client=None) -> None:
        self.dir = workdir
        ca = self.ca = pki.CA(workdir, "mesh-ca")
        rogue = pki.CA(workdir, "rogue-ca")
        self.certs = {
            "ca": ca.cert_path,
            "server": ca.issue("server", SERVER_ID, dns="pay.local"),
            "client": ca.issue("client", CLIENT_ID),
            "expired": ca.issue("expired", pki.spiffe("shop", "old"), expired=True),
            "rogue": rogue.issue("rogue", pki.spiffe("shop", "checkout")),
        }
        self.client_cert_sha256 = ca.sha256_hex(self.certs["client"][0])
        self.issuer = pki.JwtIssuer("https://issuer.test")
        self.forger = pki.JwtIssuer("https://issuer.test")  # same issuer, unknown key
        self.upstream = harness.Upstream()
        # Denies a request carrying `x-ext-authz: deny`, allows the rest.
        self.authz = harness.ExtAuthzServer(lambda _path, headers: headers.get("x-ext-authz") == "deny")
        self.ports = {
            "upstream": self.upstream.port,
            "ext_authz": self.authz.port,
            "dead": harness.free_port(),
            "mtls": harness.free_port(),
            "plain": harness.free_port(),
            "client": harness.free_port(),
            "server_admin": harness.free_port(),
            "client_admin": harness.free_port(),
        }
        (workdir / "server").mkdir()
        (workdir / "client").mkdir()
        server, client = server_config(self.certs, self.issuer, self.ports), client_config(self.certs, self.ports)
        if adjust_server:
            adjust_server(server)
        if adjust_client:
            adjust_client(client)
        self.server = harness.Envoy(server, workdir / "server")
        self.client = harness.Envoy(client, workdir / "client")
        self.server.wait_ready()
        self.client.wait_ready()

    def via_client(self, method: str, path: str, headers: dict | None = None):
        return harness.Stack.request(type("S", (), {"listen_port": self.ports["client"]})(), method, path, headers)

    def plaintext(self, method: str, path: str, headers: dict | None = None):
        return harness.Stack.request(type("S", (), {"listen_port": self.ports["plain"]})(), method, path, headers)

    def record(self, request_id: str) -> dict:
        found = self.server.wait_exactly(lambda r: r.get("request", {}).get("id") == request_id, 1, settle=0.2)
        assert len(found) == 1, f"{request_id}: {found}\n{self.server.log()[-3000:]}"
        return found[0]

    def tls_context(self, cert: tuple | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs["ca"]))
        ctx.check_hostname = False
        if cert:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return ctx

    def handshake(self, cert: tuple | None) -> str:
        """A TLS client that the server must refuse; returns its address as Envoy sees it."""
        with socket.create_connection(("127.0.0.1", self.ports["mtls"]), timeout=5) as raw:
            address = "{}:{}".format(*raw.getsockname())
            try:
                with self.tls_context(cert).wrap_socket(raw, server_hostname="pay.local") as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: pay\r\n\r\n")
                    tls.recv(100)
            except (ssl.SSLError, ConnectionResetError, OSError):
                pass
        return address

    @staticmethod
    def network_record_of(address: str):
        """Whether a record is the network filter's, of the connection from `address`."""
        return lambda r: r.get("source", {}).get("address") == address and "connection" in r

    def network_records(self, address: str) -> list[dict]:
        return [r for r in self.server.records() if self.network_record_of(address)(r)]

    def stop(self) -> None:
        self.client.stop()
        self.server.stop()
        self.authz.stop()
        self.upstream.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("mesh"))
    yield m
    m.stop()


def test_allowed_request_carries_the_callers_certificate_identity(mesh):
    status, _, _ = mesh.via_client("GET", "/admin/users", {"x-request-id": "id-allowed"})
    assert status == 200
    r = mesh.record("id-allowed")
    assert r["kind"] == "access"
    assert r["instance"] == "server-sidecar"
    assert r["peer"] == {
        "mtls": True,
        "tls_version": "TLSv1.3",
        "principal": CLIENT_ID,
        "trust_domain": "cluster.local",
        "namespace": "shop",
        "service_account": "checkout",
        "subject": "CN=client",
        "cert_sha256": mesh.client_cert_sha256,
        "local_principal": SERVER_ID,
    }
    assert r["authz"] == {
        "decision": "allowed",
        "by": "rbac",
        # A DENY filter alone, which matched nothing: no ALLOW policy applies to the workload.
        "basis": "no_allow_policy_applies",
        # The dry-run policy was evaluated too, and would not have denied this one.
        "shadow": [{"result": "allowed", "prefix": "istio_dry_run_deny_"}],
    }


def test_each_connection_is_recorded_with_its_own_caller(mesh):
    """The plugin remembers a caller per connection: two workloads on two kept-alive mTLS
    connections, their requests interleaved, and every record names its own caller."""
    other_id = pki.spiffe("billing", "reports")
    cert, key = mesh.ca.issue("billing", other_id)
    ctx = ssl.create_default_context(cafile=str(mesh.certs["ca"]))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(cert), str(key))
    direct = http.client.HTTPConnection("127.0.0.1", mesh.ports["mtls"], timeout=5)
    direct.sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", mesh.ports["mtls"]), timeout=5), server_hostname="pay.local"
    )
    try:
        for i in range(3):
            direct.request("GET", "/admin/users", headers={"x-request-id": f"id-billing-{i}"})
            response = direct.getresponse()
            response.read()
            assert response.status == 200
            assert mesh.via_client("GET", "/admin/users", {"x-request-id": f"id-shop-{i}"})[0] == 200
    finally:
        direct.close()
    for i in range(3):
        assert mesh.record(f"id-billing-{i}")["peer"]["principal"] == other_id
        assert mesh.record(f"id-billing-{i}")["peer"]["namespace"] == "billing"
        assert mesh.record(f"id-shop-{i}")["peer"]["principal"] == CLIENT_ID


def test_enforced_deny_names_the_istio_policy(mesh):
    status, _, _ = mesh.via_client("GET", "/admin/refunds/7", {"x-request-id": "id-denied"})
    assert status == 403
    r = mesh.record("id-denied")
    assert r["kind"] == "denied"
    assert r["response"]["replied_before_plugin"] is True
    assert r["authz"] == {
        "decision": "denied",
        "by": "rbac",
        "basis": "deny_policy",
        "policy": "ns[pay]-policy[deny-shop-to-refunds]-rule[0]",
        "policy_namespace": "pay",
        "policy_name": "deny-shop-to-refunds",
        "policy_rule": 0,
        "shadow": [{"result": "allowed", "prefix": "istio_dry_run_deny_"}],
    }
    assert r["peer"]["principal"] == CLIENT_ID


def test_dry_run_deny_is_recorded_on_an_allowed_request(mesh):
    status, _, _ = mesh.via_client("GET", "/reports/quarterly", {"x-request-id": "id-shadow"})
    assert status == 200, "a dry-run policy does not enforce"
    r = mesh.record("id-shadow")
    assert r["kind"] == "shadow_denied"
    assert r["why"]["reason"] == "security_outcome"
    assert r["authz"]["decision"] == "allowed"
    assert r["authz"]["shadow"] == [
        {
            "result": "denied",
            "prefix": "istio_dry_run_deny_",
            "policy": "ns[pay]-policy[dry-deny-reports]-rule[0]",
            "policy_namespace": "pay",
            "policy_name": "dry-deny-reports",
            "policy_rule": 0,
        }
    ]


@pytest.mark.parametrize(
    "case, reason, status",
    [
        ("missing", "Jwt_is_missing", 401),
        ("expired", "Jwt_is_expired", 401),
        ("forged", "Jwt_verification_fails", 401),
        ("unknown-issuer", "Jwt_issuer_is_not_configured", 401),
        # Envoy answers a wrong audience with 403; it is still an authentication failure.
        ("wrong-audience", "Audiences_in_Jwt_are_not_allowed", 403),
    ],
)
def test_jwt_rejections_carry_envoys_reason(mesh, case, reason, status):
    token = {
        "missing": None,
        "expired": mesh.issuer.token("jane@example.com", expires_in=-120),
        "forged": mesh.forger.token("jane@example.com"),
        "unknown-issuer": mesh.issuer.token("jane@example.com", iss="https://other.test"),
        "wrong-audience": mesh.issuer.token("jane@example.com", aud="someone-else"),
    }[case]
    headers = {"x-request-id": f"jwt-{case}"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    got, _, _ = mesh.via_client("GET", "/jwt/me", headers)
    assert got == status
    r = mesh.record(f"jwt-{case}")
    assert r["kind"] == "auth_failure"
    assert r["authn"] == {"method": "jwt", "result": "failed", "reason": reason}
    assert r["peer"]["principal"] == CLIENT_ID


def test_valid_jwt_records_issuer_and_a_pseudonymous_subject(mesh):
    token = mesh.issuer.token("jane@example.com")
    status, _, _ = mesh.via_client("GET", "/jwt/me", {"x-request-id": "jwt-ok", "authorization": f"Bearer {token}"})
    assert status == 200
    r = mesh.record("jwt-ok")
    assert r["authn"]["result"] == "ok"
    assert r["authn"]["issuer"] == "https://issuer.test"
    # Computed here from the key the VM was given, independently of the plugin's code.
    expected = hmac.new(HMAC_KEY.encode(), b"jane@example.com", hashlib.sha256).hexdigest()[:32]
    assert r["authn"]["subject"] == f"hmac-sha256:{expected}"
    assert r["pseudonym_key_id"] == "k-" + hashlib.sha256(b"meshaudit key id\0" + HMAC_KEY.encode()).hexdigest()[:8]
    assert "jane" not in mesh.server.log()
    assert HMAC_KEY not in mesh.server.log()
    # The same subject again: the same pseudonym.
    mesh.via_client(
        "GET", "/jwt/me", {"x-request-id": "jwt-ok-2", "authorization": f"Bearer {mesh.issuer.token('jane@example.com')}"}
    )
    assert mesh.record("jwt-ok-2")["authn"]["subject"] == r["authn"]["subject"]


def test_ext_authz_deny_and_error(mesh):
    status, _, _ = mesh.via_client("GET", "/extauthz/live/x", {"x-request-id": "ea-deny", "x-ext-authz": "deny"})
    assert status == 403
    r = mesh.record("ea-deny")
    assert r["kind"] == "denied"
    assert r["authz"] == {"decision": "denied", "by": "ext_authz", "basis": "ext_authz", "status": 403}
    assert r["response"]["code_details"].startswith("ext_authz_denied")

    status, _, _ = mesh.via_client("GET", "/extauthz/dead/x", {"x-request-id": "ea-error"})
    assert status == 403
    r = mesh.record("ea-error")
    assert r["authz"] == {"decision": "error", "by": "ext_authz", "basis": "ext_authz", "status": 403}
    assert r["response"]["code_details"].startswith("ext_authz_error")

    status, _, _ = mesh.via_client("GET", "/extauthz/live/ok", {"x-request-id": "ea-allow"})
    assert status == 200


def test_plaintext_request_is_recorded_as_such(mesh):
    status, _, _ = mesh.plaintext("GET", "/orders", {"x-request-id": "plain-1", "x-forwarded-client-cert": f"URI={CLIENT_ID}"})
    assert status == 200
    r = mesh.record("plain-1")
    assert r["why"]["rule"] == "plaintext-callers"
    assert r["peer"] == {"mtls": False}, "a header claiming an identity is not an identity"


@pytest.mark.parametrize(
    "client, failure",
    [(None, "no_client_certificate"), ("rogue", "certificate_untrusted"), ("expired", "certificate_expired")],
)
def test_handshake_failures_are_recorded_by_the_network_filter(mesh, client, failure):
    address = mesh.handshake(mesh.certs[client] if client else None)
    found = mesh.server.wait_exactly(mesh.network_record_of(address), 1, settle=0.2)
    assert len(found) == 1, mesh.server.log()[-3000:]
    r = found[0]
    assert r["kind"] == "tls_failure"
    assert r["connection"]["failure"] == failure, r["connection"]["failure_reason"]
    assert r["connection"]["failure_reason"].startswith("TLS_error")
    assert r["source"]["address"].startswith("127.0.0.1:")
    assert r["connection"]["local_address"] == f"127.0.0.1:{mesh.ports['mtls']}"
    assert r["instance"] == "server-sidecar"


@pytest.mark.parametrize("close", ["close", "reset"])
def test_a_connection_closed_or_reset_after_its_requests_is_no_handshake_failure(mesh, close):
    """An mTLS connection that completed its handshake and carried a request, then closed
    cleanly or was reset by the client (which gives it a transport failure reason in Envoy):
    the network filter writes no record of it, least of all a `tls_failure`."""
    raw = socket.create_connection(("127.0.0.1", mesh.ports["mtls"]), timeout=5)
    address = "{}:{}".format(*raw.getsockname())
    conn = http.client.HTTPConnection("127.0.0.1", mesh.ports["mtls"], timeout=5)
    conn.sock = mesh.tls_context(mesh.certs["client"]).wrap_socket(raw, server_hostname="pay.local")
    conn.request("GET", "/admin/users", headers={"x-request-id": f"conn-{close}"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    if close == "reset":
        # SO_LINGER with a zero timeout: close() sends a TCP RST, not a FIN.
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    assert mesh.record(f"conn-{close}")["peer"]["principal"] == CLIENT_ID
    # A failed handshake after it, on the same worker: once its record is there, the
    # earlier connection's close has been handled too.
    marker = mesh.handshake(None)
    assert mesh.server.wait_records(mesh.network_record_of(marker))
    assert mesh.network_records(address) == [], f"{close}: {mesh.network_records(address)}"


def test_record_connections_names_each_mtls_caller(mesh, tmp_path):
    """`network.record_connections`: a `connection` record for every connection that closes,
    with the caller's certificate identity, read in one batch from the network filter's root."""
    port, admin = harness.free_port(), harness.free_port()
    config = {
        "node": {"id": "tcp-sidecar"},
        "admin": {"address": address(admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "inbound-tcp",
                    "address": address(port),
                    "filter_chains": [
                        {
                            "transport_socket": {
                                "name": "envoy.transport_sockets.tls",
                                "typed_config": downstream_mtls(mesh.certs),
                            },
                            "filters": [
                                {
                                    "name": "envoy.filters.network.wasm",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                                        "config": wasm_config(
                                            "meshaudit-network", "network", {"network": {"record_connections": True}}
                                        ),
                                    },
                                },
                                {
                                    "name": "envoy.filters.network.tcp_proxy",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                        "stat_prefix": "tcp",
                                        "cluster": "backend",
                                    },
                                },
                            ],
                        }
                    ],
                }
            ],
            "clusters": [static_cluster("backend", mesh.ports["upstream"])],
        },
    }
    envoy = harness.Envoy(config, tmp_path)
    try:
        envoy.wait_ready()
        ctx = ssl.create_default_context(cafile=str(mesh.certs["ca"]))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(mesh.certs["client"][0]), str(mesh.certs["client"][1]))
        sources = []
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="pay.local") as tls:
                    sources.append(f"127.0.0.1:{tls.getsockname()[1]}")
                    tls.sendall(b"GET /tcp HTTP/1.1\r\nHost: pay\r\nConnection: close\r\n\r\n")
                    assert tls.recv(100).startswith(b"HTTP/1.1 200")
        found = envoy.wait_records(lambda r: r["kind"] == "connection", count=2)
        assert len(found) == 2, envoy.log()[-3000:]
        assert sorted(r["source"]["address"] for r in found) == sorted(sources)
        for r in found:
            assert r["why"] == {"reason": "record_connections"}
            assert r["connection"] == {"local_address": f"127.0.0.1:{port}"}
            assert r["peer"]["mtls"] is True
            assert r["peer"]["principal"] == CLIENT_ID
            assert r["peer"]["namespace"] == "shop"
            assert r["peer"]["tls_version"] == "TLSv1.3"
            assert r["peer"]["cert_sha256"] == mesh.client_cert_sha256
            assert r["peer"]["local_principal"] == SERVER_ID
        assert harness.BATCH_FALLBACK not in envoy.log()
    finally:
        envoy.stop()


def test_every_record_came_from_one_attribute_batch(mesh):
    """Runs last: after mTLS, JWT, ext_authz and RBAC outcomes, Envoy answered every batch."""
    assert mesh.server.records()
    assert harness.BATCH_FALLBACK not in mesh.server.log()

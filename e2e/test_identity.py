"""Who called, and what the mesh decided: two real Envoys as client and server sidecars
(e2e/mesh.py: mTLS with SPIFFE certificates, jwt_authn, ext_authz, RBAC enforced and dry-run,
meshaudit as an HTTP and as a network filter).
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
from mesh import CLIENT_ID, HMAC_KEY, SERVER_ID, Mesh, address, downstream_mtls, static_cluster, wasm_config


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

"""A small mesh of two real Envoys, as Istio's sidecars stand: the client sidecar takes plain
HTTP and calls the server sidecar over mTLS with a SPIFFE workload certificate. The server
runs jwt_authn (local JWKS), ext_authz (a small local service, and one that is down), RBAC
with enforced, principal-based and Istio dry-run (shadow) policies, then meshaudit as an HTTP
filter, and meshaudit again as a network filter for TLS handshake failures. Certificates and
tokens are made when it starts.

Used by the identity and answers tests and by the demo (scripts/demo.sh).
"""

from __future__ import annotations

import json
import socket
import ssl

import harness
import pki

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


def set_directions(config: dict) -> None:
    """Each listener's direction, as Istio sets it: the records say which hop they are."""
    for listener in config["static_resources"]["listeners"]:
        listener["traffic_direction"] = "INBOUND" if listener["name"].startswith("inbound") else "OUTBOUND"


def http_filters(config: dict) -> list[list[dict]]:
    """The HTTP filters of every HTTP connection manager in a bootstrap."""
    found = []
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    found.append(f["typed_config"]["http_filters"])
    return found


# The client sidecar's plugin, when it has one: its outbound requests to /admin audited.
CLIENT_PLUGIN = {
    "default_sample_rate": 0,
    "rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}],
}


def with_client_plugin(config: dict) -> None:
    """The client sidecar with meshaudit too: a request then leaves a record at both hops."""
    set_directions(config)
    for filters in http_filters(config):
        filters.insert(
            0,
            {
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": wasm_config("meshaudit", "meshaudit", CLIENT_PLUGIN),
                },
            },
        )


def with_server_plugin(plugin: dict):
    """The server sidecar with another HTTP plugin configuration."""

    def adjust(config: dict) -> None:
        set_directions(config)
        for filters in http_filters(config):
            for f in filters:
                if f["name"] == "envoy.filters.http.wasm":
                    f["typed_config"]["config"]["configuration"]["value"] = json.dumps(plugin)

    return adjust

"""Requests that mean two things, table-driven, over HTTP/1.1 and HTTP/2, through the real
Envoy and plugin. Each case says which rule must record it (or that none may), which
ambiguity codes its record carries, and why an upstream would act on the reading that
rule covers. Classes: path spellings, host spellings, method tunnels, routing headers,
ambiguous requests no rule names, and look-alikes that must not match.

What the readings follow: Envoy's own path normalisation is off here (the default, as with
Istio's BASE), so the plugin sees the path as sent; nginx strips a host's trailing dot and
its port; Symfony and Laravel (method override on) read `_method` from the query and honour
`X-HTTP-Method-Override`, OData and SharePoint read `X-HTTP-Method`; IIS-fronted applications
and Symfony before 4.1 route on `X-Original-URL` / `X-Rewrite-URL` (CVE-2018-14773); Tomcat
treats `..;` as `..`; Spring and IIS can match paths without regard to case.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness
import pytest

PLUGIN = {
    "default_sample_rate": 0,
    "rules": [
        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}], "case_insensitive": True}, "action": "audit"},
        {"name": "deletes", "match": {"methods": ["DELETE"]}, "action": "audit"},
        {"name": "internal-host", "match": {"hosts": ["api.internal"]}, "action": "audit"},
        {"name": "corp-hosts", "match": {"hosts": ["*.corp.example"]}, "action": "audit"},
        {
            "name": "ambiguous",
            "match": {"ambiguous": True},
            "action": "audit",
            "security_budget": False,
        },
    ],
}


@dataclass
class Case:
    id: str
    klass: str
    reason: str
    path: str
    method: str = "GET"
    host: str = "app.test"
    headers: dict = field(default_factory=dict)
    rule: str | None = None
    ambiguities: tuple = ()
    h2: bool = True
    # Envoy itself refuses it (400): no upstream ever acts on it, and there is no record.
    refused: bool = False


def path_cases() -> list[Case]:
    spellings = [
        ("plain", "/admin/users", (), "the rule's own spelling"),
        ("double-slash", "//admin/users", (), "merged slashes: nginx merge_slashes, most routers"),
        ("dot", "/./admin/users", ("path_dot_segment",), "RFC 3986 dot-segment removal"),
        ("dotdot", "/x/../admin/users", ("path_dot_segment",), "RFC 3986 dot-segment removal"),
        ("encoded-dotdot", "/x/%2e%2e/admin/users", ("path_dot_segment",), "decoded, then resolved"),
        ("mixed-dotdot", "/x/.%2E/admin/users", ("path_dot_segment",), "decoded, then resolved"),
        ("tomcat", "/x/..;/admin/users", ("path_semicolon", "path_dot_segment"), "Tomcat treats ..; as .."),
        ("unreserved-escape", "/%61dmin/users", (), "%61 is 'a' to every decoder"),
        ("escape-case", "/%41DMIN/users", (), "decoded 'A', and the rule is case-insensitive"),
        ("upper", "/ADMIN/users", (), "IIS, Spring with case-insensitive matching"),
        ("mixed-case", "/AdMiN/users", (), "IIS, Spring with case-insensitive matching"),
        ("params", "/admin;jsessionid=1/users", ("path_semicolon",), "servlet containers strip ;params"),
        ("segment-params", "/admin/users;x=1", ("path_semicolon",), "servlet containers strip ;params"),
        ("encoded-slash", "/admin%2Fusers", ("path_encoded_slash",), "upstreams that decode %2F route /admin/users"),
        ("encoded-slash-lower", "/admin%2fusers", ("path_encoded_slash",), "as above, lower-case escape"),
        ("encoded-backslash", "/admin%5Cusers", ("path_encoded_slash",), "Windows servers treat \\ as /"),
        ("query", "/admin/users?x=1", (), "the query is not part of the path"),
        ("trailing-slash", "/admin/", (), "the same resource to most routers"),
        ("repeated-dots", "/admin/./././users", ("path_dot_segment",), "RFC 3986 dot-segment removal"),
        ("leading-dotdot", "/../admin/users", ("path_dot_segment",), "above the root stays at the root"),
    ]
    return [Case(f"path-{n}", "path spelling", why, p, rule="admin", ambiguities=a) for n, p, a, why in spellings]


def host_cases() -> list[Case]:
    hosts = [
        ("plain", "api.internal", "internal-host", ()),
        ("case", "API.Internal", "internal-host", ()),
        ("trailing-dot", "api.internal.", "internal-host", ("host_trailing_dot",)),
        ("trailing-dot-port", "api.internal.:8080", "internal-host", ("host_trailing_dot",)),
        ("case-dot-port", "API.INTERNAL.:443", "internal-host", ("host_trailing_dot",)),
        ("port", "api.internal:80", "internal-host", ()),
        ("suffix", "a.corp.example", "corp-hosts", ()),
        ("suffix-dot", "a.corp.example.", "corp-hosts", ("host_trailing_dot",)),
        ("suffix-case-dot", "B.Corp.Example.:8443", "corp-hosts", ("host_trailing_dot",)),
    ]
    why = "the same fully qualified DNS name: nginx and most upstreams ignore case, one trailing dot and the port"
    return [Case(f"host-{n}", "host spelling", why, "/public", host=h, rule=r, ambiguities=a) for n, h, r, a in hosts]


def method_cases() -> list[Case]:
    post = "POST"
    cases = [
        ("plain", "DELETE", {}, "/items/1", (), "the request line"),
        ("override", post, {"x-http-method-override": "DELETE"}, "/items/1", (), "Symfony, Laravel, Google APIs"),
        ("x-http-method", post, {"x-http-method": "DELETE"}, "/items/1", (), "OData, SharePoint"),
        ("x-method-override", post, {"x-method-override": "DELETE"}, "/items/1", (), "IBM and older frameworks"),
        ("lower-case", post, {"x-http-method-override": "delete"}, "/items/1", (), "methods compared as tokens"),
        (
            "conflict",
            post,
            {"x-http-method-override": "GET", "x-http-method": "DELETE"},
            "/items/1",
            ("method_override_conflict",),
            "an upstream reading X-HTTP-Method performs the DELETE",
        ),
        (
            "conflict-reversed",
            post,
            {"x-http-method-override": "DELETE", "x-method-override": "PATCH"},
            "/items/1",
            ("method_override_conflict",),
            "an upstream reading the first performs the DELETE",
        ),
        ("query", post, {}, "/items/1?_method=DELETE", ("method_in_query",), "Symfony and Laravel read _method in the query"),
        (
            "query-and-header",
            post,
            {"x-http-method-override": "PUT"},
            "/items/1?a=1&_method=DELETE",
            ("method_override_conflict", "method_in_query"),
            "either may win, by framework",
        ),
        (
            "on-get",
            "GET",
            {"x-http-method-override": "DELETE"},
            "/items/1",
            ("method_override_not_post",),
            "some honour it on any method",
        ),
    ]
    return [
        Case(f"method-{n}", "method tunnel", why, p, method=m, headers=h, rule="deletes", ambiguities=a)
        for n, m, h, p, a, why in cases
    ]


def routing_cases() -> list[Case]:
    headers = [
        ("original-url", {"x-original-url": "/admin/users"}, "IIS URL Rewrite, Symfony < 4.1 (CVE-2018-14773)"),
        ("rewrite-url", {"x-rewrite-url": "/admin/users"}, "IIS URL Rewrite, Symfony < 4.1"),
        ("absolute", {"x-original-url": "http://app.test/admin/users?x=1"}, "an absolute URL's path"),
        ("spelled", {"x-original-url": "//admin/./users"}, "the routed path is canonicalised too"),
        ("case", {"x-rewrite-url": "/Admin/Users"}, "case-insensitive upstreams"),
    ]
    return [
        Case(f"routing-{n}", "routing header", why, "/public", headers=h, rule="admin", ambiguities=("routing_header",))
        for n, h, why in headers
    ]


def ambiguous_cases() -> list[Case]:
    """No sensitive rule names these paths: only the `ambiguous` rule records them."""
    cases = [
        ("params", "/files/a;b/c", ("path_semicolon",)),
        ("encoded-slash", "/files/a%2Fb", ("path_encoded_slash",)),
        ("dotdot", "/files/a/../b", ("path_dot_segment",)),
        ("tomcat", "/files/..;/b", ("path_semicolon", "path_dot_segment")),
        ("override-conflict-get", "/files/x", ("method_override_conflict", "method_override_not_post")),
        ("routing-same-elsewhere", "/files/x", ("routing_header",)),
    ]
    out = []
    for n, p, a in cases:
        headers = {}
        if n.startswith("override"):
            headers = {"x-http-method-override": "PUT", "x-http-method": "PATCH"}
        if n.startswith("routing"):
            headers = {"x-original-url": "/files/y"}
        out.append(
            Case(
                f"ambiguous-{n}",
                "ambiguous",
                "the readings disagree: audit it whatever its path",
                p,
                headers=headers,
                rule="ambiguous",
                ambiguities=a,
            )
        )
    return out


def negative_cases() -> list[Case]:
    cases = [
        ("public", "/public", "app.test", {}, "nothing sensitive, no ambiguity"),
        ("admin-lookalike", "/adm/in", "app.test", {}, "a different path"),
        ("host-lookalike", "/public", "api.internal.evil", {}, "another name"),
        ("suffix-bare", "/public", "corp.example", {}, "the wildcard needs a label"),
        ("override-same", "/items/1", "app.test", {"x-http-method-override": "PUT"}, "POST tunnelling PUT: no DELETE reading"),
        ("routing-same", "/public", "app.test", {"x-original-url": "/public"}, "the same path: no second reading"),
    ]
    return [
        Case(f"none-{n}", "look-alike", why, p, method="POST" if "override" in n else "GET", host=h, headers=hd)
        for n, p, h, hd, why in cases
    ] + [
        Case(
            "host-two-dots",
            "look-alike",
            "not a name that resolves to api.internal, but a dotted host is ambiguous: only that rule",
            "/public",
            host="api.internal..",
            rule="ambiguous",
            ambiguities=("host_trailing_dot",),
        )
    ]


def h1_only_cases() -> list[Case]:
    """Shapes HTTP/2 cannot carry: an absolute-form target, raw backslashes."""
    return [
        Case(
            "h1-absolute-form",
            "path spelling",
            "absolute-form target: Envoy routes on its path",
            "http://app.test/admin/users",
            rule="admin",
            h2=False,
        ),
        Case(
            "h1-backslash",
            "path spelling",
            "Windows servers treat \\ as /",
            "/admin\\users",
            rule="admin",
            ambiguities=("path_backslash",),
            h2=False,
        ),
        Case(
            "h1-backslash-lead",
            "path spelling",
            "a target not starting with '/': Envoy answers 400 itself",
            "\\admin\\users",
            h2=False,
            refused=True,
        ),
    ]


CASES = path_cases() + host_cases() + method_cases() + routing_cases() + ambiguous_cases() + negative_cases() + h1_only_cases()
SENT = [(case, proto) for case in CASES for proto in ("h1", "h2") if proto == "h1" or case.h2]


def request_id(case: Case, proto: str) -> str:
    return f"adv-{proto}-{case.id}"


def send_h1(port: int, case: Case, rid: str) -> int:
    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: {case.host}", f"x-request-id: {rid}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in case.headers.items()]
    if case.method == "POST":
        lines.append("Content-Length: 0")
    answer = harness.exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode())[1]
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def send_h2(port: int, case: Case, rid: str) -> int:
    args = [shutil.which("nghttp") or "nghttp", "-n", "-s", f"http://127.0.0.1:{port}{case.path}"]
    headers = {":method": case.method, ":authority": case.host, "x-request-id": rid, **case.headers}
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, "-v"], capture_output=True, timeout=30, text=True).stdout
    for line in out.splitlines():
        if ":status:" in line:
            return int(line.rsplit(" ", 1)[1])
    return 0


@pytest.fixture(scope="module")
def outcome():
    """Sends every case once per protocol, then collects each request's records."""
    stack = harness.Stack(PLUGIN, workdir=Path(tempfile.mkdtemp(prefix="meshaudit-adversarial-")))
    try:
        statuses = {}
        for case, proto in SENT:
            rid = request_id(case, proto)
            statuses[rid] = (send_h1 if proto == "h1" else send_h2)(stack.listen_port, case, rid)
        expected = sum(1 for case, _ in SENT if case.rule)
        stack.envoy.wait_records(lambda r: r.get("request", {}).get("id", "").startswith("adv-"), expected, timeout=15)
        time.sleep(1.0)  # a record no case expects would show by now
        by_id: dict[str, list[dict]] = {}
        for r in stack.envoy.records():
            by_id.setdefault(r.get("request", {}).get("id", ""), []).append(r)
        yield by_id, statuses
    finally:
        stack.stop()


def test_the_corpus_is_large_and_covers_both_protocols():
    assert len(SENT) >= 100, len(SENT)
    assert {c.klass for c in CASES} >= {
        "path spelling",
        "host spelling",
        "method tunnel",
        "routing header",
        "ambiguous",
        "look-alike",
    }
    assert all(c.reason for c in CASES)


@pytest.mark.parametrize("case, proto", SENT, ids=[f"{p}-{c.id}" for c, p in SENT])
def test_case(outcome, case, proto):
    by_id, statuses = outcome
    rid = request_id(case, proto)
    records = by_id.get(rid, [])
    if case.refused:
        assert (statuses[rid], records) == (400, []), f"{case.id} ({case.reason})"
        return
    assert statuses[rid] == 200, f"{case.id}: answered {statuses[rid]}"
    if case.rule is None:
        assert records == [], f"{case.id} ({case.reason}) must not be recorded: {records}"
        return
    assert len(records) == 1, f"{case.id} ({case.reason}): {records}"
    r = records[0]
    assert r["why"]["rule"] == case.rule, f"{case.id} ({case.reason}): {r['why']}"
    assert r["request"].get("ambiguities", []) == list(case.ambiguities), f"{case.id}: {r['request']}"

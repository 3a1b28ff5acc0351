"""Privacy by shape (README, "What is never logged"), in the real Envoy with the real .wasm.

Each class of secret a privacy probe once found in clear is planted, with a value unique to
this run, in a request an `audit` rule records at level `request`. Then the raw bytes of
both outputs, Envoy's log and the hand-off access log, are searched for every planted
value in clear, percent-encoded and base64. Each record is also checked for what stands in
its place, so a test cannot pass because a record was never written.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import time
import urllib.parse
from dataclasses import dataclass, field

import harness
import pytest

QUERY_ALLOWED = [
    "page",
    "q",
    "X-Amz-Security-Token",
    "X-Amz-Credential",
    "X-Goog-Signature",
    "accessToken",
    "api-key",
    "auth_token",
    "private_token",
]
CREDENTIAL_HEADERS = ["x-auth-token", "x-amz-security-token", "x-goog-api-key", "api-key", "x-access-token"]

PLUGIN = {
    "version": 1,
    "default_sample_rate": 0,
    "output": {"log": True, "filter_state": True},
    "redaction": {"query_params": QUERY_ALLOWED},
    "rules": [
        {
            "name": "everything",
            "match": {"paths": [{"prefix": "/"}]},
            "action": "audit",
            "level": "request",
            "request_headers": [*CREDENTIAL_HEADERS, "referer", "x-original-url", "x-debug", {"name": "x-callback", "url": True}],
        }
    ],
}


def word(n: int = 24) -> str:
    """A random secret of letters and digits (at least one of each)."""
    return "Q7" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def luhn_card() -> str:
    number = "4" + "".join(secrets.choice(string.digits) for _ in range(14))
    total = 0
    for i, d in enumerate(int(c) for c in reversed(number)):
        total += (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 == 0 else d
    return number + str((10 - total % 10) % 10)


def iban() -> str:
    bban = "".join(secrets.choice(string.digits) for _ in range(18))
    check = 98 - int(bban + "131400") % 97  # D = 13, E = 14, then 00 (ISO 7064)
    return f"DE{check:02d}{bban}"


def jwt() -> str:
    part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
    signature = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256'})}.{part({'sub': word(), 'n': secrets.token_hex(8)})}.{signature}"


@dataclass
class Case:
    name: str
    path: str
    headers: dict = field(default_factory=dict)
    # What must never be in either output, in any of the searched forms.
    planted: list = field(default_factory=list)
    # What the record says instead: (dotted field, expected value), or a callable on it.
    expect: list = field(default_factory=list)
    raw_host: str | None = None


def cases() -> list[Case]:
    s = {i: word() for i in range(12)}
    card, account, token, key_hex, the_jwt = luhn_card(), iban(), word(40), secrets.token_hex(20), jwt()
    phone = "1415" + "".join(secrets.choice(string.digits) for _ in range(7))
    encoded_jwt = "".join(f"%{b:02X}" for b in the_jwt.encode())
    header_values = {h: word() for h in CREDENTIAL_HEADERS}
    query_values = {q: word() for q in QUERY_ALLOWED[2:]}
    return [
        Case(
            "host-userinfo",
            "/h/1",
            planted=[s[0]],
            raw_host=f"jane:{s[0]}@svc.test",
            expect=[("request.authority", "svc.test"), ("request.ambiguities", ["authority_userinfo"])],
        ),
        Case(
            "host-userinfo-port",
            "/h/2",
            planted=[s[1]],
            raw_host=f"{s[1]}@svc.test:8080",
            expect=[("request.authority", "svc.test:8080")],
        ),
        Case(
            "path-parameter",
            f"/app;jsessionid={s[2]}/x",
            planted=[s[2]],
            expect=[("request.path", f"/app;jsessionid=[masked, {len(s[2])} bytes]/x")],
        ),
        Case(
            "matrix-parameters",
            f"/cars;color=red;owner={s[3]}/x",
            planted=[s[3]],
            expect=[("request.path", f"/cars;color=[masked, 3 bytes];owner=[masked, {len(s[3])} bytes]/x")],
        ),
        Case("query-semicolon", f"/search?page=1;token={s[4]}", planted=[s[4]], expect=[("request.query", "page=1")]),
        Case("card-in-segment", f"/pay/card-{card}", planted=[card], expect=[("request.path", "/pay/card-{card}")]),
        Case("card-file", f"/files/{card}.pdf", planted=[card], expect=[("request.path", "/files/{card}.pdf")]),
        Case("iban", f"/accounts/{account}", planted=[account, account[4:]], expect=[("request.path", "/accounts/{iban}")]),
        Case("phone", f"/call/tel:+{phone}", planted=[phone], expect=[("request.path", "/call/tel:{digits}")]),
        Case(
            "referer",
            "/r",
            {"referer": f"https://app.test/reset/{the_jwt}?token={s[5]}&page=2"},
            planted=[s[5], the_jwt],
            expect=[("request.headers.referer", "https://app.test/reset/{jwt}?page=2")],
        ),
        # Envoy removes a Referer with a fragment or userinfo (RFC 7231, 5.5.2) before any filter.
        Case(
            "referer-fragment",
            "/r2",
            {"referer": f"https://app.test/p?page=2#{s[6]}"},
            planted=[s[6]],
            expect=[("request.headers", None)],
        ),
        Case(
            "routing-header",
            "/orders",
            {"x-original-url": f"/internal?token={s[7]}"},
            planted=[s[7]],
            expect=[("request.headers.x-original-url", "/internal"), ("request.routing.x-original-url", "/internal")],
        ),
        Case(
            "url-header",
            "/u",
            {"x-callback": f"https://u:{s[8]}@hooks.test/cb?sig={s[9]}"},
            planted=[s[8], s[9]],
            expect=[("request.headers.x-callback", "https://hooks.test/cb")],
        ),
        Case(
            "credential-headers",
            "/c",
            header_values,
            planted=list(header_values.values()),
            expect=[(f"request.headers.{h}", f"[masked, {len(v)} bytes]") for h, v in header_values.items()],
        ),
        Case(
            "credential-query-names",
            "/q?" + "&".join(f"{k}={v}" for k, v in query_values.items()),
            planted=list(query_values.values()),
            expect=[("request.query", "&".join(f"{k}=[masked, {len(v)} bytes]" for k, v in query_values.items()))],
        ),
        Case(
            "jwt-segment",
            f"/reset/{the_jwt}/confirm",
            planted=[the_jwt, the_jwt.split(".")[1]],
            expect=[("request.path", "/reset/{jwt}/confirm")],
        ),
        Case("jwt-query", f"/x?q={the_jwt}", planted=[the_jwt.split(".")[1]], expect=[("request.query", "q={jwt}")]),
        Case(
            "encoded-jwt-segment",
            f"/reset/{encoded_jwt}",
            planted=[the_jwt.split(".")[1]],
            expect=[("request.path", "/reset/{jwt}")],
        ),
        Case("hex-key", f"/keys/{key_hex}", planted=[key_hex], expect=[("request.path", "/keys/{token}")]),
        Case("code-by-shape", f"/cb?q={token}&page=2", planted=[token], expect=[("request.query", "q={token}&page=2")]),
        Case("reset-token", f"/password-reset/{token}", planted=[token], expect=[("request.path", "/password-reset/{token}")]),
        Case(
            "header-value-shape",
            "/d",
            {"x-debug": f"trace=1 {the_jwt} card {card}"},
            planted=[the_jwt.split(".")[1], card],
            expect=[("request.headers.x-debug", "trace=1 {jwt} card {card}")],
        ),
        Case(
            "aws-key", f"/k/x-AKIA{s[10].upper()[:16]}", planted=[s[10].upper()[:16]], expect=[("request.path", "/k/x-{token}")]
        ),
    ]


CASES = cases()


@pytest.fixture(scope="module")
def stack():
    s = harness.Stack(PLUGIN)
    for case in CASES:
        request_id = f"privacy-{case.name}"
        if case.raw_host is not None:
            stack_raw(s, case, request_id)
        else:
            s.request("GET", case.path, {"x-request-id": request_id, **case.headers})
    yield s
    s.stop()


def stack_raw(s: harness.Stack, case: Case, request_id: str) -> None:
    request = f"GET {case.path} HTTP/1.1\r\nHost: {case.raw_host}\r\nx-request-id: {request_id}\r\nConnection: close\r\n\r\n"
    assert s.raw(request.encode()).startswith(b"HTTP/1.1 200"), "Envoy serves a Host with userinfo"


def handed_off(s: harness.Stack, request_id: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if s.audit_log_path.exists():
            for line in s.audit_log_path.read_text().splitlines():
                if line and json.loads(line).get("request", {}).get("id") == request_id:
                    return json.loads(line)
        time.sleep(0.2)
    raise AssertionError(f"no handed-off record for {request_id}")


def field_at(record: dict, dotted: str):
    """The value at `dotted`, or None when the record has no such field."""
    node = record
    for part in dotted.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def forms(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        urllib.parse.quote(value, safe=""),
        "".join(f"%{b:02X}" for b in raw),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_record_says_what_stands_in_place_of_the_secret(stack, case):
    request_id = f"privacy-{case.name}"
    logged = stack.envoy.only_record(request_id)
    assert handed_off(stack, request_id) == logged, "both outputs carry the same record"
    for dotted, expected in case.expect:
        actual = field_at(logged, dotted)
        assert actual == expected, f"{dotted}: {actual!r}"


def test_no_planted_value_is_in_either_output_in_any_form(stack):
    for case in CASES:
        handed_off(stack, f"privacy-{case.name}")
    outputs = {"Envoy's log": stack.envoy.log(), "the hand-off access log": stack.audit_log_path.read_text()}
    for case in CASES:
        for value in case.planted:
            for form in forms(value):
                for where, text in outputs.items():
                    assert form not in text, f"{case.name}: {value!r} found as {form!r} in {where}"

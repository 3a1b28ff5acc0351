"""The change trail's SQL (observability/sql/change-trail.postgresql.sql) in a real
PostgreSQL 15: requests joined with the last change, before each, to the VirtualService,
DestinationRule and AuthorizationPolicy that routed or decided it.

The meshaudit records are written here in the shape the plugin writes (each checked against
the published record schema); the Kubernetes audit events in the audit.k8s.io/v1 Event
shape an API server writes under observability/kubernetes/audit-policy.yaml. There is no
API server here.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import harness
import pytest

SQL = harness.ROOT / "observability" / "sql" / "change-trail.postgresql.sql"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run as the postgres user its package creates."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def psql():
    assert (PG_BIN / "initdb").exists(), "PostgreSQL 15 is installed by scripts/setup.sh"
    work = Path(tempfile.mkdtemp(prefix="meshaudit-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(work, user.pw_uid, user.pw_gid)
    data, port = work / "data", str(harness.free_port())
    as_postgres([str(PG_BIN / "initdb"), "-A", "trust", "-U", "meshaudit", "-D", str(data)])

    def run(sql: str) -> list[list[str]]:
        out = subprocess.run(
            [
                "psql",
                "-h",
                str(work),
                "-p",
                port,
                "-U",
                "meshaudit",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-F",
                "\t",
            ],
            input=sql,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def stop() -> None:
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])

    def start() -> None:
        as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(work / "pg.log"),
                "-w",
                "start",
                "-o",
                f"-p {port} -k {work} -c listen_addresses=''",
            ]
        )

    start()
    # What a client outside psql needs (the pipeline test's syslog-ng), and an outage.
    run.host, run.port, run.stop, run.start = str(work), port, stop, start
    try:
        yield run
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


def record(request_id: str, ts: str, **extra) -> dict:
    r = {
        "v": 1,
        "ts": ts,
        "kind": "access",
        "instance": "sidecar~10.0.0.7~productpage-1.shop~shop.svc.cluster.local",
        "stream": "0123456789abcdef",
        "seq": 0,
        "why": {"reason": "mesh_audit_policy", "action": "audit", "sample_rate": 1},
        "request": {"id": request_id, "method": "GET", "path": "/reviews/1", "canonical_path": "/reviews/1"},
        "response": {"code": 200},
        "direction": "outbound",
        **extra,
    }
    harness.validate_record(r)
    return r


def change(resource: str, name: str, at: str, user: str, verb: str = "update", code: int = 200) -> dict:
    group = "security.istio.io" if resource == "authorizationpolicies" else "networking.istio.io"
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": f"{resource}-{name}-{at}",
        "stage": "ResponseComplete",
        "requestURI": f"/apis/{group}/v1/namespaces/shop/{resource}/{name}",
        "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "objectRef": {"resource": resource, "namespace": "shop", "name": name, "apiGroup": group},
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": at,
        "stageTimestamp": at,
    }


def insert(table: str, column: str, docs: list[dict]) -> str:
    values = ",".join("('" + json.dumps(d).replace("'", "''") + "'::jsonb)" for d in docs)
    return f"INSERT INTO {table} ({column}) VALUES {values};"


def test_each_request_meets_the_last_change_before_it(psql):
    routed = {
        "name": "reviews.shop.svc.cluster.local:9080",
        "cluster": "outbound|9080||reviews.shop.svc.cluster.local",
        "virtual_service": {"namespace": "shop", "name": "reviews"},
        "destination_rule": {"namespace": "shop", "name": "reviews-tls"},
    }
    denied = {
        "kind": "denied",
        "why": {"reason": "security_outcome", "action": "audit", "sample_rate": 1},
        "authz": {
            "decision": "denied",
            "by": "rbac",
            "basis": "deny_policy",
            "policy": "ns[shop]-policy[deny-admin]-rule[0]",
            "policy_namespace": "shop",
            "policy_name": "deny-admin",
            "policy_rule": 0,
        },
    }
    records = [
        record("before-any-change", "2026-12-01T09:00:00.000Z", route=routed),
        record("after-alice", "2026-12-01T10:30:00.000Z", route=routed),
        record("after-bob", "2026-12-01T12:00:00.000Z", route=routed),
        {**record("denied", "2026-12-01T12:00:00.000Z"), **denied},
    ]
    events = [
        change("virtualservices", "reviews", "2026-12-01T10:00:00Z", "alice@example.com"),
        change("virtualservices", "reviews", "2026-12-01T11:00:00Z", "bob@example.com", verb="patch"),
        # Refused by the API server: no change.
        change("virtualservices", "reviews", "2026-12-01T11:30:00Z", "mallory@example.com", code=403),
        # After every request: joins none.
        change("virtualservices", "reviews", "2026-12-01T13:00:00Z", "carol@example.com"),
        change("destinationrules", "reviews-tls", "2026-12-01T08:00:00Z", "dave@example.com", verb="create"),
        change("authorizationpolicies", "deny-admin", "2026-12-01T07:00:00Z", "erin@example.com", verb="create"),
        # Another namespace's object of the same name.
        {
            **change("virtualservices", "reviews", "2026-12-01T11:45:00Z", "frank@example.com"),
            "objectRef": {"resource": "virtualservices", "namespace": "other", "name": "reviews"},
        },
    ]
    psql(SQL.read_text() + insert("meshaudit_records", "record", records) + insert("k8s_audit_events", "event", events))
    rows = psql(
        "SELECT request_id, object_resource, object_name, coalesce(changed_by, ''), coalesce(change_verb, '') "
        "FROM meshaudit_change_trail ORDER BY request_id, object_resource;"
    )
    assert rows == [
        ["after-alice", "destinationrules", "reviews-tls", "dave@example.com", "create"],
        ["after-alice", "virtualservices", "reviews", "alice@example.com", "update"],
        ["after-bob", "destinationrules", "reviews-tls", "dave@example.com", "create"],
        ["after-bob", "virtualservices", "reviews", "bob@example.com", "patch"],
        ["before-any-change", "destinationrules", "reviews-tls", "dave@example.com", "create"],
        ["before-any-change", "virtualservices", "reviews", "", ""],
        ["denied", "authorizationpolicies", "deny-admin", "erin@example.com", "create"],
    ]

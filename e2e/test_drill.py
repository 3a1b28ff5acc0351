"""`meshaudit drill` against the e2e mesh (two real Envoys with the plugin, jwt_authn with a
local JWKS, RBAC), reading the records where they land: the captured trail (the sidecars'
Envoy logs), and through the real pipeline (syslog-ng 3.38 tailing the server sidecar's log
into PostgreSQL 15 and ClickHouse 18.16). Every case passes where the record can say what the
case expects, and fails, naming what arrived instead, where it cannot (the client's sidecar
sees the 401 come back but not the authenticator's reason).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import clickhouse
import harness
import mesh
import pytest
from shippers import to_both_stores
from test_change_trail import psql  # noqa: F401  (the fixture: a throwaway PostgreSQL 15)

CLI = harness.ROOT / "target" / "debug" / "meshaudit"
PG = harness.ROOT / "observability" / "postgres"
CASES = ["token-missing", "token-expired", "token-forged", "denied", "malformed", "ambiguous"]


@pytest.fixture(scope="module")
def the_mesh():
    workdir = Path(tempfile.mkdtemp(prefix="meshaudit-drill-"))
    m = mesh.Mesh(workdir, adjust_client=mesh.with_client_plugin)  # both sidecars audit
    yield m
    m.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def drill(m: mesh.Mesh, *source: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(CLI),
            "drill",
            "--target",
            f"http://127.0.0.1:{m.ports['client']}",
            "--jwt-path",
            "/jwt/me",
            "--issuer",
            m.issuer.issuer,
            "--audience",
            "meshaudit",
            "--denied-path",
            "/admin/forbidden/drill",
            "--sensitive-path",
            "/admin",
            "--timeout",
            str(timeout),
            "--json",
            *source,
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )


def outcome(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode in (0, 1), run.stderr
    return json.loads(run.stdout)


def assert_all_passed(report: dict) -> None:
    assert [c["case"] for c in report["cases"]] == CASES
    assert report["failed"] == 0, json.dumps(report["cases"], indent=1)[:4000]
    for case in report["cases"]:
        assert case["record"]["request"]["id"] == case["request_id"]
        assert case["arrival_seconds"] >= 0
    by_case = {c["case"]: c for c in report["cases"]}
    assert [by_case[c]["status"] for c in CASES] == [401, 401, 401, 403, 200, 200]
    assert by_case["token-expired"]["record"]["authn"]["reason"] == "Jwt_is_expired"
    assert by_case["malformed"]["record"]["request"]["path"] == "/admin/drill%zz%"
    assert "method_override_conflict" in by_case["ambiguous"]["record"]["request"]["ambiguities"]


def test_every_case_passes_in_the_captured_trail(the_mesh):
    run = drill(the_mesh, "--trail", str(the_mesh.server.log_path), str(the_mesh.client.log_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert_all_passed(outcome(run))


def test_the_table_names_each_case_and_its_record(the_mesh):
    run = subprocess.run(
        [
            str(CLI),
            "drill",
            "--target",
            f"http://127.0.0.1:{the_mesh.ports['client']}",
            "--denied-path",
            "/admin/forbidden/table",
            "--trail",
            str(the_mesh.server.log_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[1].split() == ["case", "request", "id", "expected", "sent", "record", "after", "result"]
    assert lines[2].split()[0] == "denied" and lines[2].split()[-1] == "pass" and "403" in lines[2].split()
    assert lines[-1] == "1 of 1 cases passed"


def test_a_record_that_cannot_say_what_the_case_expects_fails_and_says_what_came(the_mesh):
    # The client's sidecar records the 401 coming back, without the authenticator's reason.
    report = outcome(drill(the_mesh, "--trail", str(the_mesh.client.log_path), timeout=3))
    failed = {c["case"]: c for c in report["cases"] if not c["passed"]}
    assert sorted(failed) == ["token-expired", "token-forged", "token-missing"]
    for case in failed.values():
        assert case["record"] is None and case["arrival_seconds"] is None
        assert case["seen"] == ["auth_failure at client-sidecar"]
    assert report["failed"] == 3 and report["passed"] == 3


def test_every_case_passes_through_the_pipeline_into_both_stores(the_mesh, psql):  # noqa: F811
    psql((PG / "schema.sql").read_text() + (PG / "inbox.sql").read_text())
    ch = clickhouse.Server()
    workdir = Path(tempfile.mkdtemp(prefix="meshaudit-drill-pipeline-"))
    logs = {"MESHAUDIT_HANDOFF_LOG": str(workdir / "no-handoff.log"), "MESHAUDIT_ENVOY_LOG": str(the_mesh.server.log_path)}
    shippers = to_both_stores(workdir, logs, psql, ch)
    try:
        ch.script((clickhouse.SQL / "schema.sql").read_text())
        for ng in shippers:
            ng.start()
        conninfo = f"host={psql.host} port={psql.port} user=meshaudit dbname=postgres"
        report = outcome(drill(the_mesh, "--postgres", conninfo))
        assert report["source"] == f"PostgreSQL {conninfo}"
        assert_all_passed(report)
        report = outcome(drill(the_mesh, "--clickhouse", f"http://127.0.0.1:{ch.http_port}", "--clickhouse-database", "default"))
        assert_all_passed(report)
        # A store that is down is the drill's error, not a failed case.
        ch.stop()
        run = drill(the_mesh, "--clickhouse", f"http://127.0.0.1:{ch.http_port}", timeout=2)
        assert run.returncode == 2 and "cannot connect" in run.stderr, run.stderr
    finally:
        for ng in shippers:
            ng.stop()
        ch.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize(
    "args, error",
    [
        (["--target", "http://127.0.0.1:1", "--denied-path", "/x"], "one place to read the records from"),
        (["--target", "https://h:443", "--denied-path", "/x", "--trail", "f"], "--target https://h:443: only http://HOST:PORT"),
        (["--target", "http://h:1", "--trail", "f"], "no case to run"),
        (["--target", "http://h:1", "--jwt-path", "/jwt", "--trail", "f"], "--jwt-path and --issuer go together"),
        (["--target", "http://h:1", "--denied-path", "x", "--trail", "f"], "--denied-path x: a path starts with /"),
        (["--target", "http://h:1", "--denied-path", "/x", "--trail", "f", "--timeout", "0"], "--timeout 0: seconds"),
        (["--target", "http://h:1", "--denied-path", "/x", "--trail", "f", "--bogus"], "--bogus"),
    ],
)
def test_a_drill_that_cannot_run_says_why(args, error):
    run = subprocess.run([str(CLI), "drill", *args], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and error in run.stderr, run.stderr

"""The shipped questions (observability/{postgres,clickhouse}/queries/*.sql) against `meshaudit
summary` on the same records: the stores' tests and the pipeline test require the same answers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import harness

CLI = harness.ROOT / "target" / "debug" / "meshaudit"
Rows = list[list[str]]


def summary(*files: Path) -> dict:
    out = subprocess.run([str(CLI), "summary", "--json", "--hops", *map(str, files)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def rows(table: list[dict], *columns: str) -> list[tuple]:
    return sorted(tuple(str(r[c]) for c in columns) for r in table)


def assert_answers_as_the_summary(run: Callable[[str], Rows], queries: Path, s: dict) -> dict[str, list]:
    """Runs every question through `run` (the store's client) and compares it with the summary's
    table; returns the answers, for the caller to require what its records must show."""

    def ask(name: str) -> Rows:
        return run((queries / f"{name}.sql").read_text())

    t = s["tables"]
    got = {
        "sensitive": [tuple(r[:6]) for r in ask("sensitive_by_caller")],
        "denials": [tuple(r[:5]) for r in ask("denials_by_policy")],
        "auth_failures": [tuple(r[:4]) for r in ask("auth_failures")],
        "tls_failures": [tuple(r[:3]) for r in ask("tls_failures")],
        "dry_run": [tuple(r[:3]) for r in ask("dry_run_would_deny")],
    }
    assert sorted(got["sensitive"]) == rows(t["sensitive"], "caller", "namespace", "method", "path", "requests", "denied")
    assert sorted(got["denials"]) == rows(t["denials"], "policy", "by", "caller", "namespace", "count")
    assert sorted(got["auth_failures"]) == rows(t["auth_failures"], "reason", "issuer", "count", "callers")
    assert sorted(got["tls_failures"]) == rows(t["tls_failures"], "reason", "source", "count")
    assert sorted(got["dry_run"]) == rows(t["dry_run"], "policy", "caller", "count")
    changes = ask("config_changes")
    assert sorted((r[1], r[2], "sha256:" + r[3].removeprefix("sha256:")[:12]) for r in changes) == rows(
        t["config"], "instance", "change", "digest"
    )
    by_kind: dict[str, int] = {}
    for _minute, kind, n in ask("records_by_kind_over_time"):
        by_kind[kind] = by_kind.get(kind, 0) + int(n)
    assert by_kind == s["records_by_kind"]
    # One row per request: the hop join is the summary's.
    assert run("SELECT count(*) FROM meshaudit_request;") == [[str(s["requests"])]]
    return got

"""The shipped pipeline, run: a real Envoy with the plugin writes both outputs (Envoy's log and
the hand-off access log), and Debian's syslog-ng 3.38 tails both, once with
observability/syslog-ng/meshaudit-postgres.conf into a real PostgreSQL 15
(observability/postgres/schema.sql and inbox.sql) and once with meshaudit-clickhouse.conf into
Debian's ClickHouse 18.16 (observability/clickhouse/schema.sql). Mid-stream both syslog-ngs are
restarted and both stores stopped for a few seconds; at the end each store holds exactly the
records Envoy wrote, each once (by instance, stream and seq), the completeness queries find no
gap, and every question answers as `meshaudit summary` does on Envoy's files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import clickhouse
import harness
import pytest
import questions
from shippers import to_both_stores
from test_change_trail import psql  # noqa: F401  (the fixture: a throwaway PostgreSQL 15)

ROOT = harness.ROOT
# Both outputs; the admin API audited, routine traffic sampled out, security outcomes recorded.
PLUGIN = {
    "default_sample_rate": 0.0,
    "output": {"log": True, "filter_state": True},
    "rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}],
}
PG = ROOT / "observability" / "postgres"


@pytest.fixture
def pipeline(psql):  # noqa: F811
    assert shutil.which("syslog-ng"), "syslog-ng is installed by scripts/setup.sh"
    psql((PG / "schema.sql").read_text() + (PG / "inbox.sql").read_text())
    ch = clickhouse.Server()
    ch.script((clickhouse.SQL / "schema.sql").read_text())
    workdir = Path(tempfile.mkdtemp(prefix="meshaudit-pipeline-"))
    (workdir / "envoy").mkdir()
    stack = harness.Stack(plugin=PLUGIN, workdir=workdir / "envoy")
    logs = {"MESHAUDIT_HANDOFF_LOG": str(stack.audit_log_path), "MESHAUDIT_ENVOY_LOG": str(stack.envoy.log_path)}
    to_pg, to_ch = to_both_stores(workdir, logs, psql, ch)
    to_pg.start()
    to_ch.start()
    try:
        yield stack, (to_pg, to_ch), psql, ch
    finally:
        to_pg.stop()
        to_ch.stop()
        stack.stop()
        ch.close()
        shutil.rmtree(workdir, ignore_errors=True)


def send(stack: harness.Stack, n: int) -> None:
    """A known mix: sensitive, denied, authentication failures, routine sampled out."""
    for i in range(n):
        for method, path in (
            ("GET", "/admin/users"),
            ("GET", "/admin/forbidden/x"),
            ("GET", "/status/401"),
            ("GET", f"/products/{i}"),
        ):
            stack.request(method, path, {"x-request-id": str(uuid.uuid4())})


def written(stack: harness.Stack) -> set[tuple[str, str, int]]:
    keys = {(r["instance"], r.get("stream", ""), r.get("seq", -1)) for r in stack.envoy.records()}
    for line in stack.audit_log_path.read_text().splitlines() if stack.audit_log_path.exists() else []:
        if line.startswith("{"):
            r = json.loads(line)
            keys.add((r["instance"], r["stream"], r["seq"]))
    return keys


def stored(psql) -> list[tuple[str, str, int]]:  # noqa: F811
    return [(i, s, int(q)) for i, s, q in psql("SELECT instance, stream, seq FROM meshaudit_record ORDER BY 1, 2, 3;")]


def stored_in_clickhouse(ch: clickhouse.Server) -> list[tuple[str, str, int]]:
    """Each record once, as the queries read the table (FINAL)."""
    return [(i, s, int(q)) for i, s, q in ch.query("SELECT instance, stream, seq FROM meshaudit_record FINAL ORDER BY 1, 2, 3")]


def wait_stored(read, want: set, timeout: float = 60.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        have = read()
        if set(have) >= want or time.monotonic() > deadline:
            return have
        time.sleep(0.5)


def test_every_record_reaches_both_stores_once_through_restarts_and_outages(pipeline):
    stack, shippers, psql, ch = pipeline  # noqa: F811
    to_pg, to_ch = shippers
    send(stack, 5)
    first = written(stack)
    assert len(wait_stored(lambda: stored(psql), first)) >= len(first), to_pg.log()[-3000:]
    assert len(wait_stored(lambda: stored_in_clickhouse(ch), first)) >= len(first), to_ch.log()[-3000:]

    for ng in shippers:  # syslog-ng restarted mid-stream: what Envoy writes meanwhile waits in the files
        ng.stop()
    send(stack, 5)
    for ng in shippers:
        ng.start()
    send(stack, 5)

    psql.stop()  # the stores down for a few seconds: syslog-ng keeps the records in its disk buffers
    ch.stop()
    send(stack, 5)
    time.sleep(3)
    psql.start()
    ch.start()
    send(stack, 5)

    stack.envoy.stop()  # the final accounting record
    want = written(stack)
    for read, ng in ((lambda: stored(psql), to_pg), (lambda: stored_in_clickhouse(ch), to_ch)):
        have = wait_stored(read, want)
        assert set(have) == want, (sorted(want - set(have))[:10], sorted(set(have) - want)[:10], ng.log()[-3000:])
        assert len(have) == len(set(have)), "each record once"
    # Both outputs carried the request records: each arrived twice and was kept once.
    assert any(line.startswith("{") for line in stack.audit_log_path.read_text().splitlines())
    assert psql((PG / "queries" / "completeness_gaps.sql").read_text()) == []
    assert psql((PG / "queries" / "completeness_accounting.sql").read_text()) == []
    assert psql("SELECT count(*) FROM meshaudit_inbox;") == [["0"]]
    assert ch.query((clickhouse.SQL / "queries" / "completeness_gaps.sql").read_text()) == []
    assert ch.query((clickhouse.SQL / "queries" / "completeness_accounting.sql").read_text()) == []
    # And what the stores answer is what `meshaudit summary` answers on the files Envoy wrote.
    answers = questions.summary(stack.envoy.log_path, stack.audit_log_path)
    for run, queries in ((psql, PG / "queries"), (ch.query, clickhouse.SQL / "queries")):
        got = questions.assert_answers_as_the_summary(run, queries, answers)
        assert got["sensitive"] and got["denials"] and got["auth_failures"], got


def test_records_wait_in_the_buffer_while_clickhouse_has_no_table(psql):  # noqa: F811
    """ClickHouse 18.16 answers 404 while the schema is not loaded, and syslog-ng 3.38 keeps
    those batches in the disk buffer and retries them (as it does a 5xx) rather than dropping
    them: loaded later, the table gets every record."""
    ch = clickhouse.Server()
    workdir = Path(tempfile.mkdtemp(prefix="meshaudit-pipeline-notable-"))
    log = workdir / "envoy.log"
    texts = harness.record_texts(harness.TRAIL.read_text())
    log.write_text("".join(f"[info] wasm log: {harness.RECORD_PREFIX}{t}\n" for t in texts))
    _, to_ch = to_both_stores(
        workdir, {"MESHAUDIT_HANDOFF_LOG": str(workdir / "none.log"), "MESHAUDIT_ENVOY_LOG": str(log)}, psql, ch
    )
    to_ch.start()
    try:
        deadline = time.monotonic() + 20
        while "404" not in to_ch.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "404" in to_ch.log(), to_ch.log()[-2000:]
        ch.script((clickhouse.SQL / "schema.sql").read_text())
        count = lambda: int(ch.query("SELECT count() FROM meshaudit_record FINAL")[0][0])  # noqa: E731
        deadline = time.monotonic() + 30
        while count() < len(texts) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert count() == len(texts), to_ch.log()[-2000:]
    finally:
        to_ch.stop()
        ch.close()
        shutil.rmtree(workdir, ignore_errors=True)

"""The records in ClickHouse (observability/clickhouse/), on Debian 12's server 18.16 and on the
current engine (chdb-core): the schema reads each column out of the record text as a JSON
parser would, keys each record by (instance, stream, seq) so a copy delivered twice counts once,
and every shipped question (queries/*.sql) answers on the trail the e2e suite captured
(tests/data/trails/mesh.log) exactly what `meshaudit summary` answers on the same file; the
completeness queries find nothing on the whole trail and find a record deleted from the table;
retention drops what is older than 13 months and keeps the rest, by partition on 18.16 and by
TTL on the current engine.

Records are inserted into the server as syslog-ng's http() destination inserts them
(JSONEachRow over HTTP, the record whole), into chdb as VALUES; e2e/test_pipeline.py runs
syslog-ng itself.
"""

from __future__ import annotations

import json

import clickhouse
import harness
import pytest
import questions

TRAIL = harness.TRAIL


def query(name: str) -> str:
    return (clickhouse.SQL / "queries" / f"{name}.sql").read_text()


@pytest.fixture(scope="module", params=["server", "chdb"])
def store(request):
    engine = clickhouse.Server() if request.param == "server" else clickhouse.Chdb()
    try:
        engine.script((clickhouse.SQL / "schema.sql").read_text())
        texts = harness.record_texts(TRAIL.read_text())
        # At least once: every record arrives twice.
        engine.insert(texts)
        engine.insert(texts)
        yield engine, texts
    finally:
        engine.close()


@pytest.fixture(scope="module")
def summary():
    return questions.summary(TRAIL)


def expected_columns(text: str) -> tuple:
    """The columns as a JSON parser reads them: what the schema's text functions must match."""
    r = json.loads(text)
    request, peer, authz = r.get("request", {}), r.get("peer", {}), r.get("authz", {})
    source = r.get("source", {}).get("address", "")
    principal = peer.get("principal", "")
    return (
        r["kind"],
        r["instance"],
        r.get("stream", ""),
        str(r.get("seq", 0)),
        r["ts"],
        r.get("direction", ""),
        request.get("id", ""),
        request.get("method_override", request.get("method", "")),
        request.get("canonical_path", request.get("path", "").split("?")[0]),
        str(r.get("response", {}).get("code", 0)),
        principal,
        peer.get("namespace", ""),
        principal or (source.rsplit(":", 1)[0] if source else ""),
        authz.get("by", ""),
        authz.get("policy", ""),
        authz.get("ext_authz", {}).get("policy", ""),
        str(len(authz.get("shadow", []))),
        r.get("authn", {}).get("reason", ""),
        r.get("connection", {}).get("failure", ""),
        r.get("config", {}).get("digest", "") if r["kind"].startswith("config_") else "",
        str(len(r.get("config", {}).get("rules", []))) if r["kind"].startswith("config_") else "0",
        str(r.get("totals", {}).get("requests", 0)),
        str(sum(r.get("records_by_kind", {}).values())),
    )


COLUMNS = (
    "kind, instance, stream, seq, ts_text, direction, request_id, method, path, response_code, principal, namespace,"
    " caller, authz_by, policy, ext_authz_policy, length(shadow), authn_reason, connection_failure, config_digest,"
    " config_rules, requests, arraySum(by_kind_counts)"
)


def test_every_column_reads_what_a_json_parser_reads(store):
    engine, texts = store
    # A record whose captured headers are named like the members read after the request
    # object, the value like a deciding policy: the columns still read the real members.
    denied = next(json.loads(t) for t in texts if json.loads(t)["kind"] == "denied" and "peer" in t)
    denied["request"]["headers"] = {"peer": '{"principal":"forged"}', "authz": '"basis":"x","policy":"forged"'}
    denied["seq"] = 10_000
    hostile = json.dumps(denied, separators=(",", ":"))
    engine.insert([hostile])
    got = {tuple(row) for row in engine.query(f"SELECT {COLUMNS} FROM meshaudit_record FINAL")}
    want = {expected_columns(t) for t in [*texts, hostile]}
    assert got == want, (sorted(want - got)[:3], sorted(got - want)[:3])
    assert engine.query("SELECT record FROM meshaudit_record FINAL WHERE seq = 10000") == [[hostile]], "kept byte for byte"
    engine.script(f"ALTER TABLE meshaudit_record DELETE WHERE seq = {denied['seq']}")
    assert clickhouse.wait_until(lambda: engine.query("SELECT count() FROM meshaudit_record WHERE seq = 10000") == [["0"]])


def test_a_record_delivered_twice_is_counted_once(store):
    engine, texts = store
    assert engine.query("SELECT count() FROM meshaudit_record FINAL") == [[str(len(texts))]]
    engine.script("OPTIMIZE TABLE meshaudit_record FINAL")
    assert engine.query("SELECT count() FROM meshaudit_record") == [[str(len(texts))]], "merged away"


def test_the_questions_answer_as_the_summary_does(store, summary):
    engine, _ = store
    got = questions.assert_answers_as_the_summary(engine.query, clickhouse.SQL / "queries", summary)
    assert all(got.values()), "the trail answers every question"


def test_completeness_in_the_store_finds_a_deleted_record(store):
    engine, _ = store
    assert engine.query(query("completeness_gaps")) == []
    assert engine.query(query("completeness_accounting")) == []
    # Punch a gap: a record in the middle of the server's HTTP stream.
    stream, seq, kind = engine.query(
        "SELECT stream, seq, kind FROM meshaudit_record FINAL WHERE instance = 'server-sidecar' AND kind = 'denied' "
        "ORDER BY seq LIMIT 1"
    )[0]
    engine.script(
        f"ALTER TABLE meshaudit_record DELETE WHERE instance = 'server-sidecar' AND stream = '{stream}' AND seq = {seq}"
    )
    assert clickhouse.wait_until(lambda: engine.query(query("completeness_gaps"))) == [["server-sidecar", stream, seq, seq]]
    [finding] = engine.query(query("completeness_accounting"))
    assert finding[:4] == ["server-sidecar", stream, finding[2], f"kind {kind}"]
    assert int(finding[4]) == int(finding[5]) + 1, finding


def aged(text: str, year: int) -> str:
    """The record as if written in another year, in a stream of its own."""
    r = json.loads(text)
    r["ts"] = f"{year}" + r["ts"][4:]
    r["stream"] = f"aged-{year}-{r.get('stream')}"
    return json.dumps(r, separators=(",", ":"))


def test_retention_drops_what_is_older_than_thirteen_months(store):
    engine, texts = store
    before = int(engine.query("SELECT count() FROM meshaudit_record FINAL")[0][0])
    engine.insert([aged(t, 2020) for t in texts[:5]])
    assert engine.query("SELECT count() FROM meshaudit_record FINAL WHERE stream LIKE 'aged-2020-%'") == [["5"]]
    if isinstance(engine, clickhouse.Server):
        # 18.16: the statements the retention query writes, run as the operator would.
        statements = [row[0] for row in engine.query((clickhouse.SQL / "retention_drop_partitions.sql").read_text())]
        assert statements and all(s.startswith("ALTER TABLE default.meshaudit_record DROP PARTITION 2020") for s in statements)
        engine.script("\n".join(statements) + "\n")
    else:
        engine.script((clickhouse.SQL / "retention_ttl.sql").read_text())
        engine.script("OPTIMIZE TABLE meshaudit_record FINAL")
    assert clickhouse.wait_until(
        lambda: engine.query("SELECT count() FROM meshaudit_record FINAL WHERE stream LIKE 'aged-2020-%'") == [["0"]]
    )
    assert engine.query("SELECT count() FROM meshaudit_record FINAL") == [[str(before)]]

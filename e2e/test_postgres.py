"""The records in a real PostgreSQL 15 (observability/postgres/): the schema keys each record
by (instance, stream, seq) so a copy delivered twice is dropped, and every shipped question
(queries/*.sql) answers on the trail the e2e suite captured (tests/data/trails/mesh.log)
exactly what `meshaudit summary` answers on the same file; the completeness queries find
nothing on the whole trail and find a record deleted from the table.

The records are inserted by this test as a shipper would (the text after the
`meshaudit.record ` prefix, one row each): no syslog-ng or Fluent Bit stands in between here.
"""

from __future__ import annotations

import harness
import pytest
import questions
from test_change_trail import psql  # noqa: F401  (the fixture: a throwaway PostgreSQL 15)

PG = harness.ROOT / "observability" / "postgres"
TRAIL = harness.TRAIL


def query(name: str) -> str:
    return (PG / "queries" / f"{name}.sql").read_text()


def insert(texts: list[str]) -> str:
    values = ",".join("('" + t.replace("'", "''") + "'::jsonb)" for t in texts)
    return f"INSERT INTO meshaudit_record (record) VALUES {values} ON CONFLICT DO NOTHING;"


@pytest.fixture(scope="module")
def store(psql):  # noqa: F811
    psql((PG / "schema.sql").read_text())
    texts = harness.record_texts(TRAIL.read_text())
    # At least once: every record arrives twice; the key keeps one.
    psql(insert(texts) + insert(texts))
    return psql, texts


@pytest.fixture(scope="module")
def summary():
    return questions.summary(TRAIL)


def test_a_record_delivered_twice_is_stored_once(store):
    run, texts = store
    assert run("SELECT count(*) FROM meshaudit_record;") == [[str(len(texts))]]
    assert run("SELECT count(*) FROM (SELECT DISTINCT instance, stream, seq FROM meshaudit_record) k;") == [[str(len(texts))]]


def test_the_questions_answer_as_the_summary_does(store, summary):
    run, _ = store
    got = questions.assert_answers_as_the_summary(run, PG / "queries", summary)
    assert all(got.values()), "the trail answers every question"


def test_completeness_in_the_store_finds_a_deleted_record(store):
    run, _ = store
    assert run(query("completeness_gaps")) == []
    assert run(query("completeness_accounting")) == []
    # Punch a gap: a record in the middle of the server's HTTP stream.
    stream, seq, kind = run(
        "SELECT stream, seq, kind FROM meshaudit_record WHERE instance = 'server-sidecar' AND kind = 'denied' "
        "ORDER BY seq LIMIT 1;"
    )[0]
    run(f"DELETE FROM meshaudit_record WHERE instance = 'server-sidecar' AND stream = '{stream}' AND seq = {seq};")
    assert run(query("completeness_gaps")) == [["server-sidecar", stream, seq, seq]]
    [finding] = run(query("completeness_accounting"))
    assert finding[:4] == ["server-sidecar", stream, finding[2], f"kind {kind}"]
    assert int(finding[4]) == int(finding[5]) + 1, finding

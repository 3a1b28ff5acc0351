-- meshaudit records in ClickHouse: one row per record, the record whole as text and the columns
-- the questions filter and group by, derived from it at insert (MATERIALIZED: a shipper sends
-- only the record, so the columns cannot disagree with it). Runs on Debian 12's ClickHouse 18.16
-- and on current releases (e2e/test_clickhouse.py runs it on both: the server, and chdb-core).
--
-- Delivery into the store is at least once (a shipper retries after an outage, or re-reads
-- after a restart): a record is keyed by (instance, stream, seq), which the plugin never
-- repeats, and the table is a ReplacingMergeTree on that key, so a copy that arrives again is
-- merged away. Merges happen in the background: every query reads through the views below,
-- which read the table FINAL, so an answer never counts a copy twice. A record of no stream
-- (config_rejected) is keyed by its digest instead. The sorting key starts with kind, which a
-- copy shares, so the questions that read one kind read only its part of the table.
--
-- Retention: partitions by month. ClickHouse 19.6 and later: retention_ttl.sql. Before (18.16):
-- retention_drop_partitions.sql writes the ALTER ... DROP PARTITION statements to run.
--
-- ClickHouse 18.16 has no JSON parser (no JSONExtract*): the columns are read with
-- visitParamExtract*, which takes the first member of a name anywhere in the text. That is exact
-- for the plugin's records, whose member order is fixed (src/core/record/): string values never
-- match (their quotes are escaped), each object is cut out first (visitParamExtractRaw) and read
-- inside, and what follows the request object is read apart from it, so a captured header
-- named like a member ("peer", "authz") cannot be taken for it. Current ClickHouse may read the
-- same columns with JSONExtract*; the names and meanings stay. The queries (queries/*.sql) join
-- with ALL (ANY INNER JOIN means something else after 19.x) and name every joined subquery
-- (current releases require it), so the same text runs on both.

CREATE TABLE IF NOT EXISTS meshaudit_record (
    record String,
    -- Where the request object ends (1 when there is none): the members after it are read in
    -- the text from there on. (18.16 lets a column's expression use stored columns only.)
    request_end UInt32 MATERIALIZED toUInt32(position(record, visitParamExtractRaw(record, 'request'))
                                             + length(visitParamExtractRaw(record, 'request'))),
    kind String MATERIALIZED visitParamExtractString(record, 'kind'),
    instance String MATERIALIZED visitParamExtractString(record, 'instance'),
    stream String MATERIALIZED if(visitParamHas(record, 'stream'), visitParamExtractString(record, 'stream'),
                                  concat('none:', lower(hex(MD5(record))))),
    seq UInt64 MATERIALIZED visitParamExtractUInt(record, 'seq'),
    -- RFC 3339 in UTC with milliseconds: the text orders as the time does, to the millisecond.
    ts_text String MATERIALIZED visitParamExtractString(record, 'ts'),
    ts DateTime MATERIALIZED parseDateTimeBestEffort(ts_text),
    direction String MATERIALIZED visitParamExtractString(substring(record, request_end), 'direction'),
    -- An audit rule's, or a mesh AUDIT policy's: the sensitive endpoints.
    sensitive UInt8 MATERIALIZED (visitParamExtractString(visitParamExtractRaw(record, 'why'), 'reason') = 'rule' AND visitParamExtractString(visitParamExtractRaw(record, 'why'), 'action') = 'audit')
                                 OR visitParamExtractString(visitParamExtractRaw(record, 'why'), 'reason') = 'mesh_audit_policy',
    request_id String MATERIALIZED visitParamExtractString(visitParamExtractRaw(record, 'request'), 'id'),
    method String MATERIALIZED if(visitParamHas(visitParamExtractRaw(record, 'request'), 'method_override'), visitParamExtractString(visitParamExtractRaw(record, 'request'), 'method_override'),
                                  visitParamExtractString(visitParamExtractRaw(record, 'request'), 'method')),
    -- The path the rules matched: the canonical path, else the path without its query.
    path String MATERIALIZED if(visitParamHas(visitParamExtractRaw(record, 'request'), 'canonical_path'), visitParamExtractString(visitParamExtractRaw(record, 'request'), 'canonical_path'),
                                splitByChar('?', visitParamExtractString(visitParamExtractRaw(record, 'request'), 'path'))[1]),
    response_code UInt16 MATERIALIZED toUInt16(visitParamExtractUInt(visitParamExtractRaw(substring(record, request_end), 'response'), 'code')),
    code_details String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'response'), 'code_details'),
    principal String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'peer'), 'principal'),
    namespace String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'peer'), 'namespace'),
    source_address String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'source'), 'address'),
    -- The peer's certificate identity, else the peer's address without its port.
    caller String MATERIALIZED if(principal != '', principal, replaceRegexpOne(source_address, ':[0-9]+$', '')),
    authz_by String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'authz'), 'by'),
    authz_basis String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'authz'), 'basis'),
    -- The deciding policy follows the basis directly; a later "policy" is an AUDIT, ext_authz or
    -- dry-run policy's.
    policy String MATERIALIZED if(match(visitParamExtractRaw(substring(record, request_end), 'authz'), '"basis":"[a-z_]*","policy":'), visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'authz'), 'policy'), ''),
    ext_authz_policy String MATERIALIZED visitParamExtractString(visitParamExtractRaw(visitParamExtractRaw(substring(record, request_end), 'authz'), 'ext_authz'), 'policy'),
    -- The dry-run results, each entry's text ({"result","prefix","policy",...}: flat objects).
    shadow Array(String) MATERIALIZED extractAll(visitParamExtractRaw(visitParamExtractRaw(substring(record, request_end), 'authz'), 'shadow'), '(\\{(?:[^{}"]|"(?:[^"\\\\]|\\\\.)*")*\\})'),
    authn_reason String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'authn'), 'reason'),
    authn_issuer String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'authn'), 'issuer'),
    connection UInt8 MATERIALIZED visitParamHas(substring(record, request_end), 'connection'),
    connection_failure String MATERIALIZED visitParamExtractString(visitParamExtractRaw(substring(record, request_end), 'connection'), 'failure'),
    config_digest String MATERIALIZED visitParamExtractString(visitParamExtractRaw(record, 'config'), 'digest'),
    config_previous_digest String MATERIALIZED visitParamExtractString(visitParamExtractRaw(record, 'config'), 'previous_digest'),
    config_version UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'config'), 'version'),
    config_rules UInt32 MATERIALIZED toUInt32(length(extractAll(visitParamExtractRaw(visitParamExtractRaw(record, 'config'), 'rules'), '("(?:[^"\\\\]|\\\\.)*")'))),
    config_error String MATERIALIZED visitParamExtractString(visitParamExtractRaw(record, 'config'), 'error'),
    interval_first_seq UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'interval'), 'first_seq'),
    requests UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'totals'), 'requests'),
    records UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'totals'), 'records'),
    hidden UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'totals'), 'hidden'),
    sampled_out UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'totals'), 'sampled_out'),
    dropped UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'totals'), 'dropped'),
    suppressed UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'totals'), 'suppressed'),
    sink_errors UInt64 MATERIALIZED visitParamExtractUInt(visitParamExtractRaw(record, 'totals'), 'sink_errors'),
    -- records_by_kind as two arrays of one length: the kinds (snake_case) and their counts.
    by_kind_names Array(String) MATERIALIZED extractAll(visitParamExtractRaw(record, 'records_by_kind'), '"([a-z_]+)":'),
    by_kind_counts Array(UInt64) MATERIALIZED arrayMap(n -> toUInt64(n), extractAll(visitParamExtractRaw(record, 'records_by_kind'), ':([0-9]+)'))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (kind, instance, stream, seq);

-- Request records, each once, with its request's key and its place among the request's hops;
-- then one row per request, as `meshaudit summary` counts them: the records a request left at a
-- gateway, the client's sidecar, a waypoint and the server's sidecar joined on its request id
-- (a record without one is a request of its own). The hop that decided it (RBAC or ext_authz)
-- speaks for it, else the server's sidecar, else the last hop; its caller is the principal the
-- hop nearest the server saw. Absent values read '-'. (The summary also splits an id a client
-- reused at one proxy; this view does not.) The same views as observability/postgres/schema.sql.
CREATE VIEW IF NOT EXISTS meshaudit_hop AS
SELECT instance, stream, seq, ts, ts_text, kind, direction, request_id, method, path, response_code,
       code_details, principal, namespace, caller, authz_by, authz_basis, policy, ext_authz_policy,
       shadow, authn_reason, authn_issuer, sensitive,
       if(request_id != '', request_id, concat(instance, '/', stream, '/', toString(seq))) AS request_key,
       multiIf(direction = 'gateway', 0, direction = 'outbound', 1, direction = 'waypoint', 2,
               direction = 'inbound', 3, 4) AS hop_order,
       authz_by IN ('rbac', 'ext_authz') AS decided
FROM meshaudit_record FINAL
WHERE kind IN ('access', 'denied', 'auth_failure', 'shadow_denied', 'shadow_allowed', 'rate_limited')
  AND connection = 0;

CREATE VIEW IF NOT EXISTS meshaudit_request AS
SELECT request_key, request_id,
       hop.1 AS ts, hop.2 AS ts_text, hop.3 AS kind, hop.4 AS authz_by, hop.5 AS authz_basis,
       hop.6 AS policy, hop.7 AS ext_authz_policy, hop.8 AS response_code,
       if(named.1 != '', named.1, if(hop.9 != '', hop.9, '-')) AS caller,
       if(named.1 != '' AND named.2 != '', named.2, '-') AS namespace,
       if(hop.10 != '', hop.10, '-') AS method,
       if(hop.11 != '', hop.11, '-') AS path,
       sensitive, hops
FROM (
    SELECT request_key,
           any(request_id) AS request_id,
           -- The hop that speaks for the request: the deciding one, else the server's, else the last.
           argMax((ts, ts_text, kind, authz_by, authz_basis, policy, ext_authz_policy, response_code,
                   caller, method, path),
                  (decided, hop_order = 3, hop_order, ts_text)) AS hop,
           -- The principal (and its namespace) the hop nearest the server saw.
           argMaxIf((principal, namespace), (hop_order, ts_text), principal != '') AS named,
           max(sensitive) AS sensitive,
           count() AS hops
    FROM meshaudit_hop
    GROUP BY request_key
);

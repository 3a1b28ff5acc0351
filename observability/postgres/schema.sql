-- meshaudit records in PostgreSQL (15): one row per record, the record whole as jsonb and the
-- columns the questions filter and group by, derived from it (so they cannot disagree).
--
-- Delivery into the store is at least once (a shipper retries after an outage, or re-reads
-- after a restart): a record is keyed by (instance, stream, seq), which the plugin never
-- repeats, and a copy that arrives again is dropped:
--     INSERT INTO meshaudit_record (record) VALUES ($1) ON CONFLICT DO NOTHING;
-- A record of no stream (config_rejected) is keyed by its digest instead.
-- The questions are in queries/*.sql; e2e/test_postgres.py runs them against a real
-- PostgreSQL 15 on a trail the e2e suite captured and checks them against `meshaudit summary`.

-- A record's ts (RFC 3339, UTC) as a time. Declared immutable so a column can be derived from
-- it: the format is ISO 8601 in UTC, which no session setting changes.
CREATE OR REPLACE FUNCTION meshaudit_ts(ts text) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (ts::timestamp) AT TIME ZONE 'UTC';

CREATE TABLE IF NOT EXISTS meshaudit_record (
    record     jsonb NOT NULL,
    instance   text GENERATED ALWAYS AS (record ->> 'instance') STORED NOT NULL,
    stream     text GENERATED ALWAYS AS (coalesce(record ->> 'stream', 'none:' || md5(record::text))) STORED NOT NULL,
    seq        bigint GENERATED ALWAYS AS (coalesce((record ->> 'seq')::bigint, 0)) STORED NOT NULL,
    ts         timestamptz GENERATED ALWAYS AS (meshaudit_ts(record ->> 'ts')) STORED NOT NULL,
    kind       text GENERATED ALWAYS AS (record ->> 'kind') STORED NOT NULL,
    direction  text GENERATED ALWAYS AS (record ->> 'direction') STORED,
    request_id text GENERATED ALWAYS AS (record #>> '{request,id}') STORED,
    -- The peer's certificate identity, else the peer's address without its port.
    caller     text GENERATED ALWAYS AS (coalesce(record #>> '{peer,principal}',
                   regexp_replace(record #>> '{source,address}', ':[0-9]+$', ''))) STORED,
    policy     text GENERATED ALWAYS AS (record #>> '{authz,policy}') STORED,
    -- The path the rules matched: the canonical path, else the path without its query.
    path       text GENERATED ALWAYS AS (coalesce(record #>> '{request,canonical_path}',
                   split_part(record #>> '{request,path}', '?', 1))) STORED,
    PRIMARY KEY (instance, stream, seq)
);

CREATE INDEX IF NOT EXISTS meshaudit_record_ts ON meshaudit_record (ts);
CREATE INDEX IF NOT EXISTS meshaudit_record_kind_ts ON meshaudit_record (kind, ts);
CREATE INDEX IF NOT EXISTS meshaudit_record_caller ON meshaudit_record (caller);
CREATE INDEX IF NOT EXISTS meshaudit_record_policy ON meshaudit_record (policy);
CREATE INDEX IF NOT EXISTS meshaudit_record_request ON meshaudit_record (request_id);

-- Request records, each with its request's key and its place among the request's hops;
-- then one row per request, as `meshaudit summary` counts them: the records a request left at a
-- gateway, the client's sidecar, a waypoint and the server's sidecar joined on its request id
-- (a record without one is a request of its own). The hop that decided it (RBAC or ext_authz)
-- speaks for it, else the server's sidecar, else the last hop; its caller is the principal the
-- hop nearest the server saw. (The summary also splits an id a client reused at one proxy;
-- this view does not.)
CREATE OR REPLACE VIEW meshaudit_hop AS
SELECT r.*,
       coalesce(r.request_id, r.instance || '/' || r.stream || '/' || r.seq) AS request_key,
       CASE r.direction WHEN 'gateway' THEN 0 WHEN 'outbound' THEN 1 WHEN 'waypoint' THEN 2
                        WHEN 'inbound' THEN 3 ELSE 4 END AS hop_order,
       coalesce(r.record #>> '{authz,by}' IN ('rbac', 'ext_authz'), false) AS decided,
       coalesce((r.record #>> '{why,reason}' = 'rule' AND r.record #>> '{why,action}' = 'audit')
                OR r.record #>> '{why,reason}' = 'mesh_audit_policy', false) AS sensitive
FROM meshaudit_record r
WHERE r.kind IN ('access', 'denied', 'auth_failure', 'shadow_denied', 'shadow_allowed', 'rate_limited')
  AND NOT r.record ? 'connection';

CREATE OR REPLACE VIEW meshaudit_request AS
WITH named AS (
    SELECT DISTINCT ON (request_key) request_key,
           record #>> '{peer,principal}' AS principal,
           record #>> '{peer,namespace}' AS namespace
    FROM meshaudit_hop
    WHERE record #>> '{peer,principal}' IS NOT NULL
    ORDER BY request_key, hop_order DESC, ts DESC
),
primary_hop AS (
    SELECT DISTINCT ON (request_key) *
    FROM meshaudit_hop
    ORDER BY request_key, decided DESC, (hop_order = 3) DESC, hop_order DESC, ts DESC
),
joined AS (
    SELECT request_key, bool_or(sensitive) AS sensitive, count(*) AS hops
    FROM meshaudit_hop
    GROUP BY request_key
)
SELECT p.request_key,
       p.request_id,
       p.ts,
       p.kind,
       p.record AS primary_record,
       coalesce(n.principal, p.caller, '-') AS caller,
       coalesce(n.namespace, '-') AS namespace,
       coalesce(p.record #>> '{request,method_override}', p.record #>> '{request,method}', '-') AS method,
       coalesce(p.path, '-') AS path,
       j.sensitive,
       j.hops
FROM primary_hop p
JOIN joined j USING (request_key)
LEFT JOIN named n USING (request_key);

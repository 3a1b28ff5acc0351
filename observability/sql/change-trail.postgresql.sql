-- The mesh's change trail in PostgreSQL: each recorded request joined with the last change,
-- before it, to each Istio object that routed or decided it (the VirtualService and
-- DestinationRule the record names in route.*, the AuthorizationPolicy in authz.*), from the
-- Kubernetes API server's audit log (observability/kubernetes/audit-policy.yaml).
--
-- The tables hold one JSON document per row, as a log shipper writes them: meshaudit
-- records (the text after "meshaudit.record ") and audit.k8s.io/v1 Events. Tested against a
-- real PostgreSQL 15 by e2e/test_change_trail.py.

CREATE TABLE IF NOT EXISTS meshaudit_records (record jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS k8s_audit_events (event jsonb NOT NULL);

CREATE INDEX IF NOT EXISTS k8s_audit_events_object
    ON k8s_audit_events ((event #>> '{objectRef,resource}'), (event #>> '{objectRef,namespace}'),
                         (event #>> '{objectRef,name}'));

CREATE OR REPLACE VIEW meshaudit_change_trail AS
SELECT (r.record ->> 'ts')::timestamptz         AS request_at,
       r.record #>> '{request,id}'               AS request_id,
       r.record ->> 'instance'                   AS proxy,
       r.record ->> 'direction'                  AS direction,
       r.record ->> 'kind'                       AS kind,
       o.resource                                AS object_resource,
       o.namespace                               AS object_namespace,
       o.name                                    AS object_name,
       (c.event ->> 'stageTimestamp')::timestamptz AS changed_at,
       c.event ->> 'verb'                        AS change_verb,
       c.event #>> '{user,username}'             AS changed_by
FROM meshaudit_records r
CROSS JOIN LATERAL (VALUES
    ('virtualservices', r.record #>> '{route,virtual_service,namespace}',
                        r.record #>> '{route,virtual_service,name}'),
    ('destinationrules', r.record #>> '{route,destination_rule,namespace}',
                         r.record #>> '{route,destination_rule,name}'),
    ('authorizationpolicies', r.record #>> '{authz,policy_namespace}',
                              r.record #>> '{authz,policy_name}')
) AS o(resource, namespace, name)
LEFT JOIN LATERAL (
    SELECT e.event
    FROM k8s_audit_events e
    WHERE e.event #>> '{objectRef,resource}' = o.resource
      AND e.event #>> '{objectRef,namespace}' = o.namespace
      AND e.event #>> '{objectRef,name}' = o.name
      AND e.event ->> 'verb' IN ('create', 'update', 'patch', 'delete')
      AND (e.event #>> '{responseStatus,code}')::int < 400
      AND (e.event ->> 'stageTimestamp')::timestamptz <= (r.record ->> 'ts')::timestamptz
    ORDER BY (e.event ->> 'stageTimestamp')::timestamptz DESC
    LIMIT 1
) c ON true
WHERE o.name IS NOT NULL;

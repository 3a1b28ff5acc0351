-- Which policies denied whom: denied requests (each once, by the hop that decided) and
-- connections (network mode), by the deciding policy, the filter and the caller.
-- `meshaudit summary`'s `denials` table.
WITH denied AS (
    SELECT primary_record AS record, caller, namespace, ts
    FROM meshaudit_request
    WHERE kind = 'denied'
    UNION ALL
    SELECT record, caller, coalesce(record #>> '{peer,namespace}', '-'), ts
    FROM meshaudit_record
    WHERE kind = 'denied' AND record ? 'connection'
)
SELECT CASE
           WHEN record #>> '{authz,by}' IS NULL THEN '(status ' || coalesce(record #>> '{response,code}', '-') || ')'
           WHEN record #>> '{authz,policy}' IS NOT NULL THEN record #>> '{authz,policy}'
           WHEN record #>> '{authz,by}' = 'ext_authz' THEN coalesce(record #>> '{authz,ext_authz,policy}', '(ext_authz)')
           WHEN record #>> '{authz,basis}' = 'no_allow_policy_matched' THEN '(no ALLOW policy matched)'
           WHEN record #>> '{authz,basis}' = 'upstream' THEN '(the application answered 403)'
           ELSE '(' || (record #>> '{authz,basis}') || ')'
       END AS policy,
       coalesce(record #>> '{authz,by}', '-') AS by,
       caller,
       namespace,
       count(*) AS denied,
       max(ts) AS last
FROM denied
GROUP BY 1, 2, 3, 4
ORDER BY denied DESC, 1, 2, 3, 4;

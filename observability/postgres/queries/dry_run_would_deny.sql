-- What the dry-run policies would have denied, by policy and caller: each request once per
-- policy. CUSTOM's selection for the external authorizer (shadow prefix istio_ext_authz_) is
-- not a dry run. `meshaudit summary`'s `dry_run` table; `meshaudit policy impact` per policy.
SELECT coalesce(e.entry ->> 'policy', e.entry ->> 'prefix', '(unnamed shadow policy)') AS policy,
       r.caller,
       count(DISTINCT h.request_key) AS would_deny,
       max(h.ts) AS last
FROM meshaudit_hop h
CROSS JOIN LATERAL jsonb_array_elements(coalesce(h.record #> '{authz,shadow}', '[]')) AS e(entry)
JOIN meshaudit_request r USING (request_key)
WHERE h.kind = 'shadow_denied'
  AND e.entry ->> 'result' = 'denied'
  AND coalesce(e.entry ->> 'prefix', '') NOT LIKE 'istio_ext_authz%'
GROUP BY 1, 2
ORDER BY would_deny DESC, 1, 2;

-- What the dry-run policies would have denied, by policy and caller: each request once per
-- policy. CUSTOM's selection for the external authorizer (shadow prefix istio_ext_authz_) is
-- not a dry run. `meshaudit summary`'s `dry_run` table; `meshaudit policy impact` per policy.
SELECT dry_run_policy AS policy, caller, uniqExact(request_key) AS would_deny, max(at) AS last
FROM (
    SELECT request_key, ts_text AS at,
           arrayJoin(arrayMap(e -> multiIf(visitParamHas(e, 'policy'), visitParamExtractString(e, 'policy'),
                                           visitParamHas(e, 'prefix'), visitParamExtractString(e, 'prefix'),
                                           '(unnamed shadow policy)'),
                              arrayFilter(e -> visitParamExtractString(e, 'result') = 'denied'
                                               AND NOT (visitParamExtractString(e, 'prefix') LIKE 'istio_ext_authz%'),
                                          shadow))) AS dry_run_policy
    FROM meshaudit_hop
    WHERE kind = 'shadow_denied'
) AS would_deny
ALL INNER JOIN (SELECT request_key, caller FROM meshaudit_request) AS requests USING (request_key)
GROUP BY policy, caller
ORDER BY would_deny DESC, policy, caller;

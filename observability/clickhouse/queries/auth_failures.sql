-- Authentication failures by Envoy's reason and the token's issuer: each request once, as the
-- hop nearest the authenticator recorded it (a client's sidecar only saw the 401 come back).
-- `meshaudit summary`'s `auth_failures` table.
SELECT reason, issuer, count() AS failures, uniqExact(caller) AS callers, max(at) AS last
FROM (
    SELECT request_key,
           argMax(if(authn_reason != '', authn_reason, if(code_details != '', code_details, '-')),
                  (hop_order, ts_text)) AS reason,
           argMax(if(authn_issuer != '', authn_issuer, '-'), (hop_order, ts_text)) AS issuer,
           max(ts_text) AS at
    FROM meshaudit_hop
    WHERE kind = 'auth_failure'
    GROUP BY request_key
) AS failed
ALL INNER JOIN (SELECT request_key, caller FROM meshaudit_request) AS requests USING (request_key)
GROUP BY reason, issuer
ORDER BY failures DESC, reason, issuer;

-- Authentication failures by Envoy's reason and the token's issuer: each request once, as the
-- hop nearest the authenticator recorded it (a client's sidecar only saw the 401 come back).
-- `meshaudit summary`'s `auth_failures` table.
WITH failed AS (
    SELECT DISTINCT ON (request_key) request_key, ts,
           coalesce(record #>> '{authn,reason}', record #>> '{response,code_details}', '-') AS reason,
           coalesce(record #>> '{authn,issuer}', '-') AS issuer
    FROM meshaudit_hop
    WHERE kind = 'auth_failure'
    ORDER BY request_key, hop_order DESC, ts DESC
)
SELECT f.reason, f.issuer, count(*) AS failures, count(DISTINCT r.caller) AS callers, max(f.ts) AS last
FROM failed f
JOIN meshaudit_request r USING (request_key)
GROUP BY f.reason, f.issuer
ORDER BY failures DESC, f.reason, f.issuer;

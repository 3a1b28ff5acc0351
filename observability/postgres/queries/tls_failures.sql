-- TLS handshakes refused, by the failure and the address they came from (a failed handshake
-- proved no identity). `meshaudit summary`'s `tls_failures` table.
SELECT coalesce(record #>> '{connection,failure}', '-') AS reason,
       coalesce(regexp_replace(record #>> '{source,address}', ':[0-9]+$', ''), '-') AS source,
       count(*) AS connections,
       min(ts) AS first,
       max(ts) AS last
FROM meshaudit_record
WHERE kind = 'tls_failure'
GROUP BY 1, 2
ORDER BY connections DESC, 1, 2;

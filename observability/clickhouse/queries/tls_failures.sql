-- TLS handshakes refused, by the failure and the address they came from (a failed handshake
-- proved no identity). `meshaudit summary`'s `tls_failures` table.
SELECT if(connection_failure != '', connection_failure, '-') AS reason,
       if(source_address != '', replaceRegexpOne(source_address, ':[0-9]+$', ''), '-') AS source,
       count() AS connections,
       min(ts_text) AS first,
       max(ts_text) AS last
FROM meshaudit_record FINAL
WHERE kind = 'tls_failure'
GROUP BY reason, source
ORDER BY connections DESC, reason, source;

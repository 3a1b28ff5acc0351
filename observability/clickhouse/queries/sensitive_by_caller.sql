-- Who reached the sensitive endpoints (an audit rule's, or one a mesh AUDIT policy marked), by
-- caller and endpoint: requests (each once, however many proxies it crossed), how many were
-- denied, first and last. `meshaudit summary`'s `sensitive` table.
SELECT caller, namespace, method, path,
       count() AS requests,
       countIf(kind = 'denied') AS denied,
       min(ts_text) AS first,
       max(ts_text) AS last
FROM meshaudit_request
WHERE sensitive = 1
GROUP BY caller, namespace, method, path
ORDER BY requests DESC, caller, namespace, method, path;

-- Who reached the sensitive endpoints (an audit rule's, or one a mesh AUDIT policy marked), by
-- caller and endpoint: requests (each once, however many proxies it crossed), how many were
-- denied, first and last. `meshaudit summary`'s `sensitive` table.
SELECT caller, namespace, method, path,
       count(*) AS requests,
       count(*) FILTER (WHERE kind = 'denied') AS denied,
       min(ts) AS first,
       max(ts) AS last
FROM meshaudit_request
WHERE sensitive
GROUP BY caller, namespace, method, path
ORDER BY requests DESC, caller, namespace, method, path;

-- Configuration changes, newest first: each proxy's applied and refused configurations, with
-- the digest, the one it replaced, the version, the number of rules, the error.
-- `meshaudit summary`'s `config` table.
SELECT ts, instance,
       replace(kind, 'config_', '') AS change,
       record #>> '{config,digest}' AS digest,
       record #>> '{config,previous_digest}' AS previous_digest,
       (record #>> '{config,version}')::bigint AS version,
       jsonb_array_length(coalesce(record #> '{config,rules}', '[]')) AS rules,
       record #>> '{config,error}' AS error
FROM meshaudit_record
WHERE kind IN ('config_applied', 'config_rejected')
ORDER BY ts DESC, instance, stream, seq;

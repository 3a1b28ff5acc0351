-- Configuration changes, newest first: each proxy's applied and refused configurations, with
-- the digest, the one it replaced, the version, the number of rules, the error.
-- `meshaudit summary`'s `config` table.
SELECT ts_text AS at, instance,
       replaceOne(kind, 'config_', '') AS change,
       config_digest AS digest,
       config_previous_digest AS previous_digest,
       config_version AS version,
       config_rules AS rules,
       config_error AS error
FROM meshaudit_record FINAL
WHERE kind IN ('config_applied', 'config_rejected')
ORDER BY at DESC, instance, stream, seq;

-- Retention before ClickHouse 19.6 (Debian 12's 18.16 has no TTL): the statements that drop
-- the months older than 13 months, one per partition; run them, for example daily:
--   clickhouse-client --query "$(cat retention_drop_partitions.sql)" | clickhouse-client --multiquery
-- Change 13 to the retention your audit policy sets. Later releases: retention_ttl.sql.
SELECT concat('ALTER TABLE ', database, '.', table, ' DROP PARTITION ', partition, ';')
FROM system.parts
WHERE database = currentDatabase() AND table = 'meshaudit_record' AND active
  AND toUInt32(partition) < toYYYYMM(subtractMonths(today(), 13))
GROUP BY database, table, partition
ORDER BY partition;

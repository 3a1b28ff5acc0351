-- Retention on ClickHouse 19.6 and later: a record is deleted 13 months after its time, whole
-- parts at a time (ttl_only_drop_parts: a month's partition goes when its newest record has
-- expired, with no rewriting). Change the interval to the retention your audit policy sets.
-- e2e/test_clickhouse.py runs it on the current engine (chdb-core). ClickHouse 18.16 has no
-- TTL: retention_drop_partitions.sql.
ALTER TABLE meshaudit_record MODIFY TTL ts + INTERVAL 13 MONTH;
ALTER TABLE meshaudit_record MODIFY SETTING ttl_only_drop_parts = 1;

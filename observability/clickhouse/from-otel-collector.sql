-- The records an OpenTelemetry Collector's clickhouse exporter writes
-- (observability/otel-collector/config.yaml: the table otel_logs, each record as Body) carried
-- into meshaudit_record as they arrive, so that the views and queries of this directory answer
-- on them. Load after schema.sql, in the exporter's database, once the exporter has created
-- otel_logs (create_schema: true). Only records: the bodies that start as the plugin's do.
-- e2e/test_otlp.py runs it on the current engine (chdb-core); the exporter needs a current
-- ClickHouse, not Debian's 18.16.
CREATE MATERIALIZED VIEW IF NOT EXISTS meshaudit_from_otel TO meshaudit_record AS
SELECT Body AS record
FROM otel_logs
WHERE startsWith(Body, '{"v":');

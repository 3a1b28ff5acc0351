-- Where a log shipper that can only INSERT (syslog-ng's sql() destination) writes: each row
-- goes on into meshaudit_record, or nowhere when that record is there already (delivery is
-- at least once). The inbox itself stays empty. Load after schema.sql.
CREATE TABLE IF NOT EXISTS meshaudit_inbox (record text);

CREATE OR REPLACE FUNCTION meshaudit_inbox_forward() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO meshaudit_record (record) VALUES (NEW.record::jsonb) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS meshaudit_inbox_forward ON meshaudit_inbox;
CREATE TRIGGER meshaudit_inbox_forward BEFORE INSERT ON meshaudit_inbox
    FOR EACH ROW EXECUTE FUNCTION meshaudit_inbox_forward();

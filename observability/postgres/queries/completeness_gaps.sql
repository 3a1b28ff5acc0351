-- Completeness at fleet scale, where the records are: the sequence numbers missing from each
-- stream (a stream's records are numbered from 0 with no gap; what is missing was lost between
-- Envoy and the store, or deleted). Copies that arrived twice never reach the table (its key,
-- ON CONFLICT DO NOTHING). A gap after the stream's last stored record (a cut tail) shows in
-- completeness_accounting.sql. `meshaudit verify` checks the same on files.
SELECT instance, stream,
       coalesce(previous + 1, 0) AS first_missing,
       seq - 1 AS last_missing
FROM (
    SELECT instance, stream, seq,
           lag(seq) OVER (PARTITION BY instance, stream ORDER BY seq) AS previous
    FROM meshaudit_record
    WHERE stream NOT LIKE 'none:%'
) numbered
WHERE seq > coalesce(previous + 1, 0)
ORDER BY instance, stream, first_missing;

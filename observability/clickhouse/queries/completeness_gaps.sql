-- Completeness at fleet scale, where the records are: the sequence numbers missing from each
-- stream (a stream's records are numbered from 0 with no gap; what is missing was lost between
-- Envoy and the store, or deleted). A copy that arrived twice counts once. A gap after the
-- stream's last stored record (a cut tail) shows in completeness_accounting.sql. `meshaudit
-- verify` checks the same on files. ClickHouse 18.16 has no window functions: each stream's
-- numbers are gathered, in order, into an array (8 bytes a record while the query runs) and
-- compared with their predecessors.
SELECT instance, stream, gap.1 AS first_missing, gap.2 AS last_missing
FROM (
    SELECT instance, stream, arraySort(groupUniqArray(toInt64(seq))) AS numbers
    FROM meshaudit_record
    WHERE NOT (stream LIKE 'none:%')
    GROUP BY instance, stream
)
ARRAY JOIN arrayFilter(g -> g.1 <= g.2,
                       arrayMap((previous, n) -> (previous + 1, n - 1),
                                arrayPopBack(arrayPushFront(numbers, toInt64(-1))), numbers)) AS gap
ORDER BY instance, stream, first_missing;

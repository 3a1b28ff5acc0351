-- Each accounting record against the records of its interval (first_seq up to its own seq):
-- the kinds it declares written that the store does not hold as many of (or holds more of),
-- and totals that do not add up (requests = records + hidden + sampled_out + dropped +
-- suppressed). No row: every interval is whole. Records Envoy refused are declared but never
-- stored: a shortfall no larger than the interval's sink_errors (shown beside it) is that.
-- ClickHouse 18.16 joins on equality only: each stored record finds its interval among its
-- stream's accounting records, gathered into an array; and ORDER BY would bind to the last
-- SELECT of a UNION ALL, so the union is wrapped.
SELECT *
FROM (
    SELECT instance, stream, at_seq, finding, declared, stored, sink_errors
    FROM (
        SELECT instance, stream, at_seq, concat('kind ', counted_kind) AS finding,
               sum(declared_n) AS declared, sum(stored_n) AS stored
        FROM (
            SELECT instance, stream, seq AS at_seq, pair.1 AS counted_kind, pair.2 AS declared_n, toUInt64(0) AS stored_n
            FROM meshaudit_record FINAL
            ARRAY JOIN arrayMap((name, n) -> (name, n), by_kind_names, by_kind_counts) AS pair
            WHERE kind = 'accounting'
            UNION ALL
            SELECT instance, stream, bounds.1 AS at_seq, kind AS counted_kind, toUInt64(0), toUInt64(1)
            FROM (
                -- The record's seq goes into the lambda as an array: 18.16 drops a column that
                -- only a lambda's body names.
                SELECT instance, stream, kind,
                       arrayFilter((i, s) -> i.2 <= s AND s < i.1, intervals,
                                   arrayResize(emptyArrayUInt64(), length(intervals), seq)) AS owning
                FROM meshaudit_record FINAL
                ALL INNER JOIN (
                    SELECT instance, stream, groupArray((seq, interval_first_seq)) AS intervals
                    FROM meshaudit_record FINAL
                    WHERE kind = 'accounting'
                    GROUP BY instance, stream
                ) AS streams USING (instance, stream)
            )
            ARRAY JOIN owning AS bounds
        )
        GROUP BY instance, stream, at_seq, counted_kind
        HAVING declared != stored
    ) AS mismatched
    ALL LEFT JOIN (
        SELECT instance, stream, seq AS at_seq, sink_errors
        FROM meshaudit_record FINAL
        WHERE kind = 'accounting'
    ) AS accounting USING (instance, stream, at_seq)
    UNION ALL
    SELECT instance, stream, seq AS at_seq, 'totals do not add up' AS finding, requests AS declared,
           records + hidden + sampled_out + dropped + suppressed AS stored, sink_errors
    FROM meshaudit_record FINAL
    WHERE kind = 'accounting' AND requests != records + hidden + sampled_out + dropped + suppressed
)
ORDER BY instance, stream, at_seq, finding;

-- Each accounting record against the records of its interval (first_seq up to its own seq):
-- the kinds it declares written that the store does not hold as many of (or holds more of),
-- and totals that do not add up (requests = records + hidden + sampled_out + dropped +
-- suppressed). No row: every interval is whole. Records Envoy refused are declared but never
-- stored: a shortfall no larger than the interval's sink_errors (shown beside it) is that.
WITH interval AS (
    SELECT instance, stream, seq AS at_seq,
           (record #>> '{interval,first_seq}')::bigint AS first_seq,
           record
    FROM meshaudit_record
    WHERE kind = 'accounting'
),
declared AS (
    SELECT i.instance, i.stream, i.at_seq, d.key AS kind, d.value::bigint AS declared
    FROM interval i
    CROSS JOIN LATERAL jsonb_each_text(coalesce(i.record -> 'records_by_kind', '{}')) AS d
),
stored AS (
    SELECT i.instance, i.stream, i.at_seq, r.kind, count(*) AS stored
    FROM interval i
    JOIN meshaudit_record r
      ON r.instance = i.instance AND r.stream = i.stream AND r.seq >= i.first_seq AND r.seq < i.at_seq
    GROUP BY 1, 2, 3, 4
)
SELECT instance, stream, at_seq,
       'kind ' || kind AS finding,
       coalesce(declared, 0) AS declared,
       coalesce(stored, 0) AS stored,
       coalesce((i.record #>> '{totals,sink_errors}')::bigint, 0) AS sink_errors
FROM declared
FULL JOIN stored USING (instance, stream, at_seq, kind)
JOIN interval i USING (instance, stream, at_seq)
WHERE coalesce(declared, 0) <> coalesce(stored, 0)
UNION ALL
SELECT instance, stream, at_seq, 'totals do not add up',
       (record #>> '{totals,requests}')::bigint,
       coalesce((record #>> '{totals,records}')::bigint, 0) + coalesce((record #>> '{totals,hidden}')::bigint, 0)
           + coalesce((record #>> '{totals,sampled_out}')::bigint, 0) + coalesce((record #>> '{totals,dropped}')::bigint, 0)
           + coalesce((record #>> '{totals,suppressed}')::bigint, 0),
       coalesce((record #>> '{totals,sink_errors}')::bigint, 0)
FROM interval
WHERE coalesce((record #>> '{totals,requests}')::bigint, 0) <>
      coalesce((record #>> '{totals,records}')::bigint, 0) + coalesce((record #>> '{totals,hidden}')::bigint, 0)
      + coalesce((record #>> '{totals,sampled_out}')::bigint, 0) + coalesce((record #>> '{totals,dropped}')::bigint, 0)
      + coalesce((record #>> '{totals,suppressed}')::bigint, 0)
ORDER BY 1, 2, 3, 4;

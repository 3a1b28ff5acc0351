-- Records by kind per minute (toStartOfHour, toStartOfDay for another bucket).
SELECT toStartOfMinute(ts) AS minute, kind, count() AS records
FROM meshaudit_record FINAL
GROUP BY minute, kind
ORDER BY minute, kind;

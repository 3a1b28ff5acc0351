-- Records by kind per minute (change the unit of date_trunc for another bucket).
SELECT date_trunc('minute', ts) AS minute, kind, count(*) AS records
FROM meshaudit_record
GROUP BY 1, 2
ORDER BY 1, 2;

-- Retention: batched deletes from one table against dropping daily partitions, and what
-- partitions cost the look-ups by request id alone (docs/scaling.md). Run with psql against a
-- scratch database (it makes and drops tables exp_plain and exp_part):  psql URL -f bench/retention.sql
\timing on
DROP TABLE IF EXISTS exp_plain, exp_part CASCADE;
-- 30 days of request rows, 33,000 a day (1M), ids in the service's format
CREATE TABLE exp_plain (id varchar(64) PRIMARY KEY, event_id int NOT NULL, status varchar(16) NOT NULL, reason varchar(32), accepted_at timestamptz NOT NULL, processed_at timestamptz NOT NULL DEFAULT now(), pad text);
CREATE INDEX ON exp_plain (event_id, status, reason);
CREATE TABLE exp_part (id varchar(64) NOT NULL, event_id int NOT NULL, status varchar(16) NOT NULL, reason varchar(32), accepted_at timestamptz NOT NULL, processed_at timestamptz NOT NULL DEFAULT now(), pad text, PRIMARY KEY (id, accepted_at)) PARTITION BY RANGE (accepted_at);
CREATE INDEX ON exp_part (event_id, status, reason);
SELECT format('CREATE TABLE exp_part_%s PARTITION OF exp_part FOR VALUES FROM (%L) TO (%L)', d + 1, date_trunc('day', now()) - (d || ' days')::interval, date_trunc('day', now()) - ((d - 1) || ' days')::interval) FROM generate_series(0, 31) d \gexec
\echo 'insert 1M rows, plain'
INSERT INTO exp_plain SELECT translate(encode(substring(int8send((extract(epoch from t)*1000)::bigint) from 3) || int4send(e) || int4send(g) || substring(decode(md5(random()::text)||md5(random()::text),'hex') from 1 for 22), 'base64'), '+/', '-_'), e, 'REJECTED', 'SOLD_OUT', t, t, repeat('x', 60)
FROM (SELECT g, 1 + g / 1000 AS e, date_trunc('day', now()) - interval '30 days' + g * interval '2592 ms' AS t FROM generate_series(1, 1000000) g) s;
\echo 'insert 1M rows, partitioned'
INSERT INTO exp_part SELECT * FROM exp_plain;
VACUUM ANALYZE exp_plain; VACUUM ANALYZE exp_part;
\echo 'lookups by id alone: 20,000 of them'
CREATE TEMP TABLE probe AS SELECT id FROM exp_plain ORDER BY random() LIMIT 20000;
DO $$ DECLARE r record; n int := 0; BEGIN FOR r IN SELECT id FROM probe LOOP PERFORM 1 FROM exp_plain WHERE id = r.id; n := n + 1; END LOOP; END $$;
DO $$ DECLARE r record; n int := 0; BEGIN FOR r IN SELECT id FROM probe LOOP PERFORM 1 FROM exp_part WHERE id = r.id; n := n + 1; END LOOP; END $$;
\echo 'drop the oldest day: batched DELETE (5,000 a batch) vs DROP partition'
SELECT pg_current_wal_lsn() AS lsn0 \gset
DO $$ DECLARE n int; BEGIN LOOP DELETE FROM exp_plain WHERE id IN (SELECT id FROM exp_plain WHERE event_id <= 34 LIMIT 5000); GET DIAGNOSTICS n = ROW_COUNT; EXIT WHEN n < 5000; END LOOP; END $$;
SELECT pg_size_pretty(pg_current_wal_lsn() - :'lsn0') AS wal_of_delete;
SELECT pg_current_wal_lsn() AS lsn1 \gset
DROP TABLE exp_part_31;
SELECT pg_size_pretty(pg_current_wal_lsn() - :'lsn1') AS wal_of_drop;
\echo 'vacuum after the delete'
VACUUM exp_plain;
DROP TABLE exp_plain, exp_part CASCADE;

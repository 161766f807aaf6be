-- The benchmark table: 5,000,000 rows x 10 mixed columns (psql -v rows=N to change).
-- psql postgres://postgres@127.0.0.1:5432/fraiseql_flight_bench -f bench/make_table.sql
\if :{?rows}
\else
\set rows 5000000
\endif
DROP TABLE IF EXISTS ta_bench;
CREATE TABLE ta_bench (
    id         bigint PRIMARY KEY,
    qty        int4 NOT NULL,
    price      float8 NOT NULL,
    amount     numeric(12,2),
    name       text NOT NULL,
    created_at timestamptz NOT NULL,
    day        date NOT NULL,
    active     bool NOT NULL,
    uid        uuid NOT NULL,
    note       varchar(40)
);
INSERT INTO ta_bench
SELECT n,
       (n % 1000)::int4,
       n * 0.37,
       ((n % 100000) * 1.25)::numeric(12,2),
       'customer-' || (n % 50000),
       timestamptz '2026-01-01 00:00:00+00' + n * interval '1 second',
       date '2020-01-01' + (n % 2000),
       n % 3 = 0,
       md5(n::text)::uuid,
       CASE WHEN n % 10 = 0 THEN NULL ELSE 'note ' || (n % 777) END
  FROM generate_series(1, :rows) AS n;
VACUUM ANALYZE ta_bench;
-- 10 million rows produced on the fly (a set-returning function in the select list
-- streams; in FROM it would be materialised first), for the RSS measurement.
CREATE OR REPLACE VIEW va_stream10m AS
SELECT n AS id, (n % 1000)::int4 AS qty, n * 0.37 AS price, 'customer-' || (n % 50000) AS name,
       timestamptz '2026-01-01 00:00:00+00' + n * interval '1 second' AS created_at,
       n % 3 = 0 AS active, md5(n::text)::uuid AS uid
  FROM (SELECT generate_series(1, 10000000) AS n) s;

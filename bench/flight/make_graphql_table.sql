-- The GraphQL benchmark's source: the first 250,000 rows of ta_bench (make_table.sql) as a
-- FraiseQL table-backed view `tv_bench_row` (id uuid, data jsonb), the shape GraphQL reads.
-- The benchmark reads the whole table, so both paths return the same set of rows without an
-- ORDER BY. psql -v rows=N to change the row count.
\if :{?rows}
\else
\set rows 250000
\endif
DROP TABLE IF EXISTS tv_bench_row;
CREATE TABLE tv_bench_row AS
SELECT uid AS id,
       jsonb_build_object('id', uid, 'qty', qty, 'price', price, 'name', name,
                          'created_at', created_at, 'active', active, 'note', note) AS data
  FROM ta_bench
 WHERE id <= :rows;
VACUUM ANALYZE tv_bench_row;

-- FraiseQL shop example: write tables (tb_) with foreign keys (fk_) and indexes, read views
-- (v_) that expose NATIVE columns beside `data jsonb` — the columns a filter or an order can
-- use an index on — with the nested objects and lists embedded in `data` (snake_case keys).
-- bench/shop_bench.py serves it with FraiseQL (v_ and tv_, examples/shop/tv.sql) and
-- PostGraphile v5 (the tb_ tables) side by side. Requires nothing but PostgreSQL.

CREATE TABLE tb_customer (
    pk_customer bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    email       text        NOT NULL UNIQUE,
    name        text        NOT NULL,
    country     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tb_product (
    pk_product bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid          NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    sku        text          NOT NULL UNIQUE,
    name       text          NOT NULL,
    price      numeric(10,2) NOT NULL CHECK (price >= 0)
);

CREATE TABLE tb_order (
    pk_order    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid          NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    number      integer       NOT NULL UNIQUE,
    fk_customer bigint        NOT NULL REFERENCES tb_customer (pk_customer) ON DELETE CASCADE,
    status      text          NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    placed_at   timestamptz   NOT NULL DEFAULT now(),
    total       numeric(12,2) NOT NULL DEFAULT 0
);
CREATE INDEX tb_order_fk_customer_idx ON tb_order (fk_customer);
CREATE INDEX tb_order_status_number_idx ON tb_order (status, number);
CREATE INDEX tb_order_placed_at_idx ON tb_order (placed_at);

CREATE TABLE tb_order_item (
    pk_order_item bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            uuid          NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    fk_order      bigint        NOT NULL REFERENCES tb_order (pk_order) ON DELETE CASCADE,
    fk_product    bigint        NOT NULL REFERENCES tb_product (pk_product),
    line          integer       NOT NULL,
    quantity      integer       NOT NULL CHECK (quantity > 0),
    unit_price    numeric(10,2) NOT NULL,
    UNIQUE (fk_order, line)
);
CREATE INDEX tb_order_item_fk_product_idx ON tb_order_item (fk_product);

CREATE VIEW v_customer AS
SELECT c.id,
       c.email,
       c.country,
       c.created_at,
       jsonb_build_object(
           'id', c.id,
           'email', c.email,
           'name', c.name,
           'country', c.country,
           'created_at', c.created_at
       ) AS data
  FROM tb_customer c;

CREATE VIEW v_product AS
SELECT p.id,
       p.sku,
       p.price,
       jsonb_build_object('id', p.id, 'sku', p.sku, 'name', p.name, 'price', p.price) AS data
  FROM tb_product p;

-- An order with its customer (object) and its items (list, by line), each item with its
-- product (object).
CREATE VIEW v_order AS
SELECT o.id,
       o.number,
       o.placed_at,
       o.status,
       o.fk_customer,
       jsonb_build_object(
           'id', o.id,
           'number', o.number,
           'status', o.status,
           'placed_at', o.placed_at,
           'total', o.total,
           'customer', jsonb_build_object('id', c.id, 'name', c.name, 'email', c.email),
           'items', coalesce((
               SELECT jsonb_agg(jsonb_build_object(
                          'id', i.id,
                          'line', i.line,
                          'quantity', i.quantity,
                          'unit_price', i.unit_price,
                          'product', jsonb_build_object('id', p.id, 'sku', p.sku, 'name', p.name)
                      ) ORDER BY i.line)
                 FROM tb_order_item i
                 JOIN tb_product p ON p.pk_product = i.fk_product
                WHERE i.fk_order = o.pk_order), '[]'::jsonb)
       ) AS data
  FROM tb_order o
  JOIN tb_customer c ON c.pk_customer = o.fk_customer;

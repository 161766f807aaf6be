-- Deterministic shop data: 300 customers, 100 products, 1,500 orders with 2 to 6 items
-- each (6,000 items, 4 per order on average). Order numbers are a permutation of
-- 100000..101499 (number = 100000 + o * 7919 mod 1500), so ordering by number is not the
-- insertion order; statuses cycle through the five values (300 orders each).

INSERT INTO tb_customer (id, email, name, country, created_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
       'customer' || lpad(n::text, 3, '0') || '@example.com',
       'Customer ' || lpad(n::text, 3, '0'),
       (ARRAY['FR', 'DE', 'US', 'JP', 'BR', 'IN'])[n % 6 + 1],
       timestamptz '2024-01-01 00:00:00+00' + n * interval '1 day'
  FROM generate_series(1, 300) AS n
 ORDER BY n;

INSERT INTO tb_product (id, sku, name, price)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(n), 12, '0'))::uuid,
       'SKU-' || lpad(n::text, 4, '0'),
       'Product ' || lpad(n::text, 3, '0'),
       round(((n * 37) % 200 + 1) + (n % 4) * 0.25, 2)
  FROM generate_series(1, 100) AS n
 ORDER BY n;

INSERT INTO tb_order (id, number, fk_customer, status, placed_at)
SELECT ('00000000-0000-4000-a000-' || lpad(to_hex(o), 12, '0'))::uuid,
       100000 + (o * 7919) % 1500,
       c.pk_customer,
       (ARRAY['pending', 'paid', 'shipped', 'delivered', 'cancelled'])[o % 5 + 1],
       timestamptz '2025-01-01 00:00:00+00' + o * interval '37 minutes'
  FROM generate_series(1, 1500) AS o
  JOIN tb_customer c ON c.id = ('00000000-0000-4000-8000-' || lpad(to_hex((o * 13) % 300 + 1), 12, '0'))::uuid
 ORDER BY o;

-- Order o has 2 + o % 5 items; item i of it is product (o * 31 + i * 17) % 100 + 1 (distinct
-- within an order), quantity 1 + (o + i) % 3, at the product's price.
INSERT INTO tb_order_item (id, fk_order, fk_product, line, quantity, unit_price)
SELECT ('00000000-0000-4000-b000-' || lpad(to_hex(o * 10 + i), 12, '0'))::uuid,
       tor.pk_order,
       p.pk_product,
       i,
       1 + (o + i) % 3,
       p.price
  FROM generate_series(1, 1500) AS o
  CROSS JOIN LATERAL generate_series(1, 2 + o % 5) AS i
  JOIN tb_order tor ON tor.id = ('00000000-0000-4000-a000-' || lpad(to_hex(o), 12, '0'))::uuid
  JOIN tb_product p ON p.sku = 'SKU-' || lpad(((o * 31 + i * 17) % 100 + 1)::text, 4, '0')
 ORDER BY o, i;

UPDATE tb_order o
   SET total = s.total
  FROM (SELECT fk_order, sum(quantity * unit_price) AS total FROM tb_order_item GROUP BY fk_order) s
 WHERE s.fk_order = o.pk_order;

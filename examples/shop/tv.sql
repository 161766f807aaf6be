-- Table-backed copy of v_order (tv_order): the same native columns (id, number, placed_at,
-- status, fk_customer) and `data jsonb`, stored, with the same indexes as tb_order, so a
-- read costs an index lookup instead of building the nested JSON of every order. Triggers
-- on the tb_ tables keep it current in the same transaction. Point the Order type and the
-- order queries at it with `"sql_source": "tv_order"` (bench/shop_bench.py does).
-- Requires examples/shop/schema.sql; may run before or after the seed.

CREATE TABLE tv_order (
    id          uuid        PRIMARY KEY,
    number      integer     NOT NULL UNIQUE,
    placed_at   timestamptz NOT NULL,
    status      text        NOT NULL,
    fk_customer bigint      NOT NULL,
    data        jsonb       NOT NULL
);
CREATE INDEX tv_order_fk_customer_idx ON tv_order (fk_customer);
CREATE INDEX tv_order_status_number_idx ON tv_order (status, number);
CREATE INDEX tv_order_placed_at_idx ON tv_order (placed_at);

-- Recomputes the given orders from v_order; an id without an order any more is removed.
CREATE FUNCTION tv_order_refresh(p_ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tv_order t
     WHERE t.id = ANY(p_ids) AND NOT EXISTS (SELECT 1 FROM tb_order o WHERE o.id = t.id);
    -- An order's number moves between rows only through this upsert: free the number first.
    DELETE FROM tv_order t
     USING v_order v
     WHERE v.id = ANY(p_ids) AND t.number = v.number AND t.id <> v.id;
    INSERT INTO tv_order (id, number, placed_at, status, fk_customer, data)
    SELECT id, number, placed_at, status, fk_customer, data FROM v_order WHERE id = ANY(p_ids)
        ON CONFLICT (id) DO UPDATE
       SET number = EXCLUDED.number, placed_at = EXCLUDED.placed_at, status = EXCLUDED.status,
           fk_customer = EXCLUDED.fk_customer, data = EXCLUDED.data;
END;
$$;

CREATE FUNCTION tv_order_on_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM tv_order WHERE id = OLD.id;
    ELSE
        PERFORM tv_order_refresh(ARRAY[NEW.id]);
    END IF;
    RETURN NULL;
END;
$$;

-- An item is embedded in its order (an item moved to another order changes both).
CREATE FUNCTION tv_order_on_item() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tv_order_refresh(ARRAY(
        SELECT o.id FROM tb_order o
         WHERE o.pk_order = ANY(ARRAY[CASE WHEN TG_OP <> 'INSERT' THEN OLD.fk_order END,
                                      CASE WHEN TG_OP <> 'DELETE' THEN NEW.fk_order END])));
    RETURN NULL;
END;
$$;

-- A customer's name and email are embedded in their orders.
CREATE FUNCTION tv_order_on_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tv_order_refresh(ARRAY(SELECT id FROM tb_order WHERE fk_customer = NEW.pk_customer));
    RETURN NULL;
END;
$$;

-- A product's sku and name are embedded in the items of the orders that contain it.
CREATE FUNCTION tv_order_on_product() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tv_order_refresh(ARRAY(
        SELECT DISTINCT o.id FROM tb_order_item i JOIN tb_order o ON o.pk_order = i.fk_order
         WHERE i.fk_product = NEW.pk_product));
    RETURN NULL;
END;
$$;

CREATE TRIGGER tv_order_order AFTER INSERT OR UPDATE OR DELETE ON tb_order
    FOR EACH ROW EXECUTE FUNCTION tv_order_on_order();
CREATE TRIGGER tv_order_item AFTER INSERT OR UPDATE OR DELETE ON tb_order_item
    FOR EACH ROW EXECUTE FUNCTION tv_order_on_item();
CREATE TRIGGER tv_order_customer AFTER UPDATE ON tb_customer
    FOR EACH ROW EXECUTE FUNCTION tv_order_on_customer();
CREATE TRIGGER tv_order_product AFTER UPDATE ON tb_product
    FOR EACH ROW EXECUTE FUNCTION tv_order_on_product();

-- Rows that exist already.
INSERT INTO tv_order (id, number, placed_at, status, fk_customer, data)
SELECT id, number, placed_at, status, fk_customer, data FROM v_order
    ON CONFLICT (id) DO NOTHING;

-- Row-level security on two tenants, for FraiseQL's [auth] hand-off to PostgreSQL.
--
-- Run as a superuser (or the owner of the database) after `fraiseql db init`:
--   psql "$DATABASE_URL" -f examples/rls/schema.sql -f examples/rls/seed.sql
--
-- Roles are cluster-wide: the names rls_login (the pool's login role) and rls_tenant (the
-- role tokens switch to with SET LOCAL ROLE, listed in auth.db_roles) are examples; the
-- integration tests replace them with unique names per test.
--
-- The rule that makes RLS apply: the login role is neither a superuser nor the owner of
-- the tables (superusers and owners bypass policies; FORCE only covers owners), and the
-- views are security_invoker so the policies are checked as the querying role rather than
-- as the view's owner.

CREATE ROLE rls_login LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE ROLE rls_tenant NOLOGIN;
GRANT rls_tenant TO rls_login;

CREATE TABLE tb_order (
    id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id text NOT NULL DEFAULT current_setting('app.tenant_id', true),
    item      text NOT NULL,
    amount    numeric(12,2) NOT NULL
);

-- Sensor readings uploaded with Flight DoPut (only ta_ tables accept DoPut).
CREATE TABLE ta_reading (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text NOT NULL DEFAULT current_setting('app.tenant_id', true),
    sensor    text NOT NULL,
    value     float8 NOT NULL
);

-- `current_setting(…, true)` is NULL when the request set no tenant: no row matches, so a
-- request without a tenant sees nothing and writes nothing.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['tb_order', 'ta_reading'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON %I
         USING (tenant_id = current_setting(''app.tenant_id'', true))
         WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', t);
  END LOOP;
END $$;

-- GraphQL reads v_order (id + data), Flight view tickets va_order.
CREATE VIEW v_order WITH (security_invoker = true) AS
SELECT id, tenant_id,
       jsonb_build_object('id', id, 'tenant_id', tenant_id, 'item', item, 'amount', amount) AS data
FROM tb_order;

CREATE VIEW va_order WITH (security_invoker = true) AS
SELECT id, tenant_id, item, amount FROM tb_order;

CREATE VIEW va_reading WITH (security_invoker = true) AS
SELECT id, tenant_id, sensor, value FROM ta_reading;

-- The GraphQL mutation createOrder. The row's tenant_id is the request's app.tenant_id
-- (the column default); the policy's WITH CHECK refuses anything else.
CREATE FUNCTION fn_create_order(input jsonb) RETURNS fraiseql.mutation_response
LANGUAGE plpgsql AS $$
DECLARE v_id uuid;
BEGIN
    INSERT INTO tb_order (item, amount)
    VALUES (input ->> 'item', (input ->> 'amount')::numeric)
    RETURNING id INTO v_id;
    RETURN fraiseql.mutation_ok(v_id, 'Order', (SELECT data FROM v_order WHERE id = v_id));
END;
$$;

-- With auth.db_roles = ["rls_tenant"]: requests run as rls_tenant, which has the rights;
-- the login role has none of them itself.
GRANT SELECT, INSERT ON tb_order, ta_reading TO rls_tenant;
GRANT SELECT ON v_order, va_order, va_reading TO rls_tenant;
GRANT USAGE ON SCHEMA public, fraiseql TO rls_tenant;
-- A mutation records its event in the change log as the request's role.
GRANT SELECT, INSERT, UPDATE ON fraiseql.tb_entity_change_log TO rls_tenant;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA fraiseql TO rls_tenant;

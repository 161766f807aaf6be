-- Two tenants' rows (run as the table owner; FORCE RLS applies to the owner too, so each
-- tenant's rows are inserted with its tenant set).
BEGIN;
SELECT set_config('app.tenant_id', 'acme', true);
INSERT INTO tb_order (item, amount) VALUES ('anvil', 120.00), ('rocket skates', 75.50);
INSERT INTO ta_reading (sensor, value) VALUES ('acme-1', 1.5);
COMMIT;
BEGIN;
SELECT set_config('app.tenant_id', 'globex', true);
INSERT INTO tb_order (item, amount) VALUES ('hammock', 42.00);
INSERT INTO ta_reading (sensor, value) VALUES ('globex-1', 9.25);
COMMIT;

-- Mutations through the API: their functions' writes to tracked tables are logged by the
-- tracking trigger like any other write (before, after, changed_fields), and the row events
-- of the mutation's own entity carry what the mutation returned in `mutation`:
-- {"name": <GraphQL field>, "entity": <returned object>, "updated_fields": [...]}. An entity
-- whose table is not tracked gets one row written by the API instead (no `before`).
-- `fraiseql.skip_tracking = 'on'` still turns the trigger off for a transaction (bulk loads
-- that must not notify anyone); the API no longer sets it.
ALTER TABLE fraiseql.tb_entity_change_log ADD COLUMN IF NOT EXISTS mutation jsonb;

-- FraiseQL core objects: the change log, its wake-up trigger, change tracking for
-- tables written outside the API, and the mutation response type with its constructors.
-- Runs inside one transaction under an advisory lock (see src/db/migrate.rs).

CREATE SCHEMA IF NOT EXISTS fraiseql;

CREATE TABLE IF NOT EXISTS fraiseql.tb_entity_change_log (
    pk             bigserial PRIMARY KEY,
    id             uuid        NOT NULL DEFAULT gen_random_uuid(),
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    entity         text        NOT NULL,
    entity_id      uuid,
    op             text        NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    before         jsonb,
    after          jsonb,
    changed_fields text[],
    actor          text,
    tenant_id      text,
    trace_id       text
);

CREATE INDEX IF NOT EXISTS tb_entity_change_log_entity_pk_idx
    ON fraiseql.tb_entity_change_log (entity, pk);
CREATE INDEX IF NOT EXISTS tb_entity_change_log_occurred_at_idx
    ON fraiseql.tb_entity_change_log (occurred_at);

-- The notification is only a wake-up: readers always catch up from their checkpoint,
-- so a lost notification delays nothing but the next poll.
CREATE OR REPLACE FUNCTION fraiseql.notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fraiseql_changes', NEW.pk::text);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS tb_entity_change_log_notify ON fraiseql.tb_entity_change_log;
CREATE TRIGGER tb_entity_change_log_notify
    AFTER INSERT ON fraiseql.tb_entity_change_log
    FOR EACH ROW EXECUTE FUNCTION fraiseql.notify_change();

-- Row trigger installed by fraiseql.track_changes(). TG_ARGV[0] is the entity name.
-- Writes made through the GraphQL API set fraiseql.skip_tracking = 'on' for their
-- transaction, because the API writes the change-log row itself (exactly once).
CREATE OR REPLACE FUNCTION fraiseql.log_row_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_before  jsonb;
    v_after   jsonb;
    v_id      uuid;
    v_changed text[];
BEGIN
    IF coalesce(current_setting('fraiseql.skip_tracking', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        v_before := to_jsonb(OLD);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        v_after := to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}')
          INTO v_changed
          FROM jsonb_each(v_after) n
         WHERE n.value IS DISTINCT FROM v_before -> n.key;
        IF v_changed = '{}' THEN
            RETURN NULL;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(k ORDER BY k) INTO v_changed FROM jsonb_object_keys(v_after) k;
    END IF;
    BEGIN
        v_id := (coalesce(v_after, v_before) ->> 'id')::uuid;
    EXCEPTION WHEN others THEN
        v_id := NULL;
    END;
    INSERT INTO fraiseql.tb_entity_change_log
        (entity, entity_id, op, before, after, changed_fields, actor, tenant_id, trace_id)
    VALUES (
        TG_ARGV[0], v_id, TG_OP, v_before, v_after, v_changed,
        coalesce(nullif(current_setting('fraiseql.actor', true), ''), current_user::text),
        nullif(current_setting('fraiseql.tenant_id', true), ''),
        nullif(current_setting('fraiseql.trace_id', true), '')
    );
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION fraiseql.track_changes(tbl regclass, entity text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS fraiseql_track_changes ON %s', tbl);
    EXECUTE format(
        'CREATE TRIGGER fraiseql_track_changes AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION fraiseql.log_row_change(%L)', tbl, entity);
END;
$$;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = 'fraiseql' AND t.typname = 'mutation_response'
    ) THEN
        CREATE TYPE fraiseql.mutation_response AS (
            succeeded      boolean,
            state_changed  boolean,
            error_class    text,
            message        text,
            entity_id      uuid,
            entity_type    text,
            entity         jsonb,
            updated_fields text[],
            metadata       jsonb
        );
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION fraiseql.mutation_ok(
    entity_id      uuid,
    entity_type    text,
    entity         jsonb,
    state_changed  boolean DEFAULT true,
    message        text DEFAULT NULL,
    updated_fields text[] DEFAULT NULL,
    metadata       jsonb DEFAULT NULL
) RETURNS fraiseql.mutation_response
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(true, state_changed, NULL, message, entity_id, entity_type, entity,
               updated_fields, metadata)::fraiseql.mutation_response
$$;

CREATE OR REPLACE FUNCTION fraiseql.mutation_err(
    error_class text,
    message     text,
    entity_id   uuid DEFAULT NULL,
    entity_type text DEFAULT NULL,
    metadata    jsonb DEFAULT NULL
) RETURNS fraiseql.mutation_response
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(false, false, error_class, message, entity_id, entity_type, NULL,
               NULL, metadata)::fraiseql.mutation_response
$$;

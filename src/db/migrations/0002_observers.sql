-- FraiseQL observers: reader checkpoints, dead letters, dedup window.
-- Idempotent; applied after 0001_core.sql.

-- The reader orders the change log by (transaction id, pk) and only reads rows whose
-- transaction is older than every running one, so a late commit can never land behind its
-- cursor (see src/observers/reader.rs). Existing rows get the migration's own xid.
ALTER TABLE fraiseql.tb_entity_change_log
    ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS tb_entity_change_log_txid_pk_idx
    ON fraiseql.tb_entity_change_log (txid, pk);

-- One durable cursor per consumer (observer reader group). (last_txid, last_pk): every
-- change at or below it is finished. (dispatched_txid, dispatched_pk): high-water mark
-- written before a batch is dispatched; changes above it were never dispatched, so their
-- jobs need no dedup lookup.
CREATE TABLE IF NOT EXISTS fraiseql.tb_observer_checkpoint (
    consumer        text        PRIMARY KEY,
    last_txid       xid8        NOT NULL,
    last_pk         bigint      NOT NULL,
    dispatched_txid xid8        NOT NULL DEFAULT '0',
    dispatched_pk   bigint      NOT NULL DEFAULT 0,
    -- start_from = "now": changes visible in this snapshot are history, not delivered.
    start_snapshot  pg_snapshot,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Jobs that failed permanently or ran out of attempts, with every attempt's error.
-- status: dead (waiting for an operator) | retry_requested (`fraiseql dlq retry`) |
-- retrying (claimed by a running instance at claimed_at).
CREATE TABLE IF NOT EXISTS fraiseql.tb_observer_dead_letter (
    pk              bigserial   PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    job_id          uuid        NOT NULL,
    change_pk       bigint      NOT NULL,
    observer        text        NOT NULL,
    action_index    integer     NOT NULL,
    action_type     text        NOT NULL,
    job             jsonb       NOT NULL,
    attempts        integer     NOT NULL,
    errors          jsonb       NOT NULL DEFAULT '[]',
    last_error      text,
    status          text        NOT NULL DEFAULT 'dead'
                    CHECK (status IN ('dead', 'retry_requested', 'retrying')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz
);
CREATE INDEX IF NOT EXISTS tb_observer_dead_letter_status_idx
    ON fraiseql.tb_observer_dead_letter (status, pk);
CREATE INDEX IF NOT EXISTS tb_observer_dead_letter_created_at_idx
    ON fraiseql.tb_observer_dead_letter (created_at);

-- Idempotency keys that succeeded recently: replays inside the window are skipped.
CREATE TABLE IF NOT EXISTS fraiseql.tb_observer_dedup (
    idempotency_key text        PRIMARY KEY,
    succeeded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tb_observer_dedup_succeeded_at_idx
    ON fraiseql.tb_observer_dedup (succeeded_at);

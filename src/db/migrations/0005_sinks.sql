-- Analytics sinks ([[sinks]], src/sinks/): one durable position per sink, advanced only
-- after the sink acknowledged every change up to it; changes a sink refused for good.

CREATE TABLE IF NOT EXISTS fraiseql.tb_sink_checkpoint (
    sink        text        PRIMARY KEY,
    last_txid   xid8        NOT NULL DEFAULT '0',
    last_pk     bigint      NOT NULL DEFAULT 0,
    rows_sent   bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per change a sink refused permanently (e.g. an Elasticsearch mapping error),
-- with the backend's reason; the sink's checkpoint moves past it.
CREATE TABLE IF NOT EXISTS fraiseql.tb_sink_dead_letter (
    pk          bigserial   PRIMARY KEY,
    sink        text        NOT NULL,
    change_pk   bigint      NOT NULL,
    entity      text        NOT NULL,
    entity_id   uuid,
    status      integer,
    reason      text        NOT NULL,
    document    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sink, change_pk)
);

-- Every position the change-log retention must not prune past: the observer readers' and
-- the sinks' (as `sink:<name>`).
CREATE OR REPLACE VIEW fraiseql.v_change_log_checkpoint AS
    SELECT consumer, last_txid, last_pk FROM fraiseql.tb_observer_checkpoint
    UNION ALL
    SELECT 'sink:' || sink, last_txid, last_pk FROM fraiseql.tb_sink_checkpoint;

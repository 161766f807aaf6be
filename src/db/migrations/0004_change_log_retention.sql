-- Change-log retention (`fraiseql db prune`, `[change_log] retention`): the position of the
-- newest row ever pruned. Pruning deletes a prefix of the log in (txid, pk) order, so every
-- row at or below this position is gone and every row above it is kept. A Flight `events`
-- ticket resuming from a position below it is refused (the rows it has not seen are gone)
-- instead of silently skipping them.
CREATE TABLE IF NOT EXISTS fraiseql.tb_change_log_horizon (
    id          boolean     PRIMARY KEY DEFAULT true CHECK (id),
    pruned_txid xid8        NOT NULL,
    pruned_pk   bigint      NOT NULL,
    pruned_rows bigint      NOT NULL DEFAULT 0,
    pruned_at   timestamptz NOT NULL DEFAULT now()
);

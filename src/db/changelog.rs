//! The change log's one delivery rule, shared by every consumer of
//! `fraiseql.tb_entity_change_log` (the observer reader, Flight `events` tickets): the
//! position type `(txid, pk)`, its text form `"<txid>:<pk>"`, and the SQL pieces that read
//! rows after a position without ever skipping one.
//!
//! The rule: read the rows strictly after a position, ordered by `(txid, pk)`, and only the
//! rows whose transaction is older than every transaction still running
//! ([`SAFE`]: `txid < pg_snapshot_xmin(pg_current_snapshot())`).
//!
//! Why: `pk` comes from a sequence when a row is inserted, not when it commits, so a
//! transaction that commits late can make a smaller `pk` appear behind a consumer that
//! already moved past it. `txid` (migration 0002, `DEFAULT pg_current_xact_id()`) is the
//! inserting transaction's id; every transaction that can still insert a row either is
//! running now — and then its id is at or above the snapshot's xmin, so [`SAFE`] holds its
//! rows and everything after them back — or has no id yet and will get one above every
//! current id. So once a row passes [`SAFE`], no row can ever appear at a lower position,
//! and a position is a resume point that cannot skip. The cost: a long-running writing
//! transaction (anywhere in the cluster, as transaction ids are) delays the rows after it
//! until it ends.

use std::fmt;
use std::str::FromStr;

/// Orders change-log rows by position.
pub const ORDER: &str = "txid, pk";

/// Holds back rows whose transaction is not older than every running one.
pub const SAFE: &str = "txid < pg_snapshot_xmin(pg_current_snapshot())";

/// Every column of a change event, with the transaction id as text (`txid`), in the order
/// [`crate::observers::reader`] decodes them.
pub const EVENT_COLUMNS: &str = "pk, txid::text AS txid, id, occurred_at, entity, entity_id, op, \
     before, after, changed_fields, actor, tenant_id, trace_id, mutation";

/// The row's transaction id as text (xid8 has no binary mapping in tokio-postgres).
pub const TXID_TEXT: &str = "txid::text";

#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    #[error("invalid change-log position {0:?} (expected \"<txid>:<pk>\", e.g. \"7412:1200\")")]
    Invalid(String),
    #[error("invalid transaction id {0:?}")]
    Txid(String),
}

/// A position in the change log: `(transaction id, pk)`, ordered in that order. Text form
/// `"<txid>:<pk>"`; `0:0` is before every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub txid: u64,
    pub pk: i64,
}

impl Position {
    /// A row's position from its `txid::text` and `pk`.
    pub fn from_parts(txid: &str, pk: i64) -> Result<Position, PositionError> {
        let txid = txid
            .parse()
            .map_err(|_| PositionError::Txid(txid.to_string()))?;
        Ok(Position { txid, pk })
    }
}

/// The predicate "strictly after the position bound as `txid` (a text expression) and
/// `pk` (a bigint expression)".
pub fn after(txid: &str, pk: &str) -> String {
    format!("(txid, pk) > (CAST({txid} AS xid8), {pk})")
}

/// The predicate "strictly before the position bound as `txid` and `pk`".
pub fn before(txid: &str, pk: &str) -> String {
    format!("(txid, pk) < (CAST({txid} AS xid8), {pk})")
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.txid, self.pk)
    }
}

impl FromStr for Position {
    type Err = PositionError;

    fn from_str(s: &str) -> Result<Position, PositionError> {
        let invalid = || PositionError::Invalid(s.to_string());
        let (txid, pk) = s.split_once(':').ok_or_else(invalid)?;
        let pk = pk.parse().map_err(|_| invalid())?;
        Position::from_parts(txid, pk).map_err(|_| invalid())
    }
}

impl<'de> serde::Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Position, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_orders_by_txid_first() {
        let p: Position = "7412:1200".parse().unwrap();
        assert_eq!(
            p,
            Position {
                txid: 7412,
                pk: 1200
            }
        );
        assert_eq!(p.to_string(), "7412:1200");
        assert!(Position { txid: 1, pk: 9 } < Position { txid: 2, pk: 1 });
        for bad in ["", "12", "a:1", "1:b", "-1:2", "1:2:3"] {
            let e = bad.parse::<Position>().unwrap_err().to_string();
            assert!(e.contains("<txid>:<pk>"), "{bad}: {e}");
        }
    }

    #[test]
    fn predicate_casts_the_bound() {
        assert_eq!(
            after("$1::text", "$2::bigint"),
            "(txid, pk) > (CAST($1::text AS xid8), $2::bigint)"
        );
    }
}

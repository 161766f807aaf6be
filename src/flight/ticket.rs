//! Tickets, the wire model: the small JSON documents a client hands to DoGet (and to
//! GetFlightInfo / GetSchema as a command descriptor), parsed and size-checked here;
//! [`super::plan`] turns them into SQL.
//!
//! ```json
//! {"type": "view", "view": "va_orders", "columns": ["id", "total"],
//!  "where": {"status": {"in": ["paid", "shipped"]}, "_or": [{"total": {"gte": 100}}]},
//!  "order_by": ["created_at", {"column": "total", "direction": "desc", "nulls": "last"}],
//!  "limit": 1000, "offset": 0}
//! {"type": "events", "entity": "order", "after": "7412:1200", "since": "2026-01-01T00:00:00Z",
//!  "until": "2026-02-01T00:00:00Z", "limit": 10000, "follow": false}
//! {"type": "graphql", "query": "{ orders { id total } }", "variables": {}}
//! ```
//!
//! `OptimizedView`, `ObserverEvents` and `GraphQLQuery` are accepted as type aliases.
//! Unknown keys are errors. Events come in change-log position order `(txid, pk)`
//! ([`crate::db::changelog`]); `after` is exclusive: the position `"<txid>:<pk>"` a stream's
//! last batch carried in its `app_metadata`, the resume point that cannot skip a change.
//! `since_pk` (exclusive, the last pk the client has seen) still filters by pk, but a
//! change that commits late can have a lower pk than one already read, so resuming by pk
//! can skip it.
//!
//! The `where` language: an object whose keys are column names (ANDed) or `_and` / `_or`
//! (lists) / `_not` (object); a column maps to an operator object (`eq neq gt gte lt lte in
//! nin contains icontains startswith istartswith endswith iendswith like ilike isnull`,
//! several operators ANDed) or to a bare value (shorthand for `eq`).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::db::changelog::Position;

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error("ticket is {size} bytes; the limit is {limit} (flight.max_ticket_bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("ticket is not valid JSON: {0}")]
    NotJson(String),
    #[error("invalid ticket: {0}")]
    Invalid(String),
    #[error("unknown view {0:?}: not a va_/ta_ view or table in the schema registry")]
    UnknownView(String),
    #[error("{relation} has no column {column:?}")]
    UnknownColumn { relation: String, column: String },
    #[error("invalid where at {path}: {message}")]
    Where { path: String, message: String },
    #[error("invalid order_by: {0}")]
    OrderBy(String),
}

/// A parsed ticket.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum Ticket {
    #[serde(rename = "view", alias = "OptimizedView")]
    View(ViewTicket),
    #[serde(rename = "events", alias = "ObserverEvents")]
    Events(EventsTicket),
    #[serde(rename = "graphql", alias = "GraphQLQuery")]
    GraphQL(GraphQLTicket),
}

impl Ticket {
    /// The label used in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Ticket::View(_) => "view",
            Ticket::Events(_) => "events",
            Ticket::GraphQL(_) => "graphql",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewTicket {
    pub view: String,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default, rename = "where")]
    pub filter: Option<Value>,
    #[serde(default)]
    pub order_by: Option<Vec<Value>>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsTicket {
    #[serde(default)]
    pub entity: Option<String>,
    /// Resume position (`"<txid>:<pk>"`, exclusive): the `after` of the last batch's
    /// `app_metadata`.
    #[serde(default)]
    pub after: Option<Position>,
    /// A filter `pk > since_pk`, the older resume form: a change that commits after a
    /// higher pk was read can be below it, so resuming by pk can skip it; `after` cannot.
    #[serde(default)]
    pub since_pk: Option<i64>,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub follow: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphQLTicket {
    pub query: String,
    #[serde(default)]
    pub variables: Option<Map<String, Value>>,
    #[serde(default, alias = "operationName")]
    pub operation_name: Option<String>,
}

/// Parses ticket bytes, enforcing the size limit first.
pub fn parse(bytes: &[u8], max_bytes: usize) -> Result<Ticket, TicketError> {
    if bytes.len() > max_bytes {
        return Err(TicketError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| TicketError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(TicketError::Invalid(
            "a ticket is a JSON object with a \"type\" key (view, events or graphql)".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| TicketError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_and_aliases() {
        let t = parse(br#"{"type":"OptimizedView","view":"va_x"}"#, 1024).unwrap();
        assert_eq!(t.kind(), "view");
        let t = parse(br#"{"type":"ObserverEvents","since_pk":3}"#, 1024).unwrap();
        assert_eq!(t.kind(), "events");
        let t = parse(br#"{"type":"events","after":"9:4"}"#, 1024).unwrap();
        assert!(matches!(t, Ticket::Events(e) if e.after == Some(Position { txid: 9, pk: 4 })));
        let e = parse(br#"{"type":"events","after":4}"#, 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = parse(br#"{"type":"events","after":"4"}"#, 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("<txid>:<pk>"), "{e}");
        let t = parse(br#"{"type":"GraphQLQuery","query":"{a}"}"#, 1024).unwrap();
        assert_eq!(t.kind(), "graphql");
    }

    #[test]
    fn rejects_bad_tickets_clearly() {
        let e = parse(br#"{"type":"view","view":"va_x","colums":[]}"#, 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colums"), "{e}");
        let e = parse(br#"{"type":"sql","sql":"select 1"}"#, 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant"), "{e}");
        let e = parse(b"not json", 1024).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse(&[b' '; 2000], 1024).unwrap_err().to_string();
        assert!(e.contains("limit is 1024"), "{e}");
    }
}

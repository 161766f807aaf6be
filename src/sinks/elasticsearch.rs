//! Elasticsearch / OpenSearch through `_bulk` (NDJSON: an action line, then a document line
//! for `index`/`create`), and [`ddl`]: the index template and ILM policy printed by
//! `fraiseql sink ddl elasticsearch`.
//!
//! Two kinds of index (`document_id`):
//! - `entity` (default): `_id` = the entity id, one document per entity holding its current
//!   state. An INSERT or UPDATE is an `index` of the row image `after`, a DELETE a `delete`,
//!   both with `version` = the change-log `pk` and `version_type = external`: Elasticsearch
//!   applies a change only when its version is above the stored one, so a re-sent or late
//!   older change answers 409 (counted as already applied) and never overwrites a newer
//!   state or brings back a deleted document — as long as the delete's tombstone is kept
//!   (`index.gc_deletes`, 60 s by default: a change older than the tombstone arriving later
//!   than that would re-create the document; raise it for sinks that can lag longer).
//! - `event`: `_id` = the change's id, one document per change (`create`: a re-sent one
//!   answers 409), in an index per entity and month with `{month}` in the pattern.
//!
//! Outcomes per item: 2xx applied; 409 already applied; a `delete` answering 404 is applied
//! (nothing to delete; the tombstone still records its version); 429 and 5xx are sent again
//! (only those items); anything else is refused for good and dead-lettered with the
//! backend's reason.

use serde_json::{Value, json};

use super::{Ack, Batch, DocumentId, Refused, Sink, SinkConfig, SinkError, describe, http_client};
use crate::db::changelog::Position;
use crate::observers::config::ChangeOp;
use crate::observers::matcher::ChangeEvent;

pub struct Elasticsearch {
    client: reqwest::Client,
    url: reqwest::Url,
    index: String,
    id: DocumentId,
}

impl Elasticsearch {
    pub fn new(cfg: &SinkConfig) -> Result<Elasticsearch, SinkError> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| SinkError::Connect(e.to_string()))?;
        Ok(Elasticsearch {
            client: http_client(cfg)?,
            url,
            index: cfg.index.clone(),
            id: cfg.document_id,
        })
    }

    fn endpoint(&self, path: &str) -> reqwest::Url {
        let mut url = self.url.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{path}"));
        url
    }
}

/// The index of a change: the pattern with `{entity}` (lower-cased; characters an index
/// name cannot hold become `_`) and `{month}` (`YYYY.MM`) replaced.
pub fn index_name(pattern: &str, ev: &ChangeEvent) -> String {
    let entity: String = ev
        .entity
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    pattern
        .replace("{entity}", &entity)
        .replace("{month}", &ev.occurred_at.format("%Y.%m").to_string())
}

/// The `_bulk` lines of one change.
pub fn encode_item(
    pattern: &str,
    id: DocumentId,
    position: Position,
    ev: &ChangeEvent,
) -> Result<Vec<u8>, SinkError> {
    let index = index_name(pattern, ev);
    let meta = json!({
        "pk": ev.pk,
        "txid": position.txid,
        "event_id": ev.id,
        "op": ev.op.as_str(),
        "occurred_at": ev.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    let lines: Vec<Value> = match id {
        DocumentId::Entity => {
            let Some(entity_id) = ev.entity_id else {
                return Err(SinkError::Encode(
                    "the change has no entity id (the row has no uuid `id`), which a \
                     current-state index needs as _id"
                        .into(),
                ));
            };
            let target = json!({
                "_index": index,
                "_id": entity_id,
                "version": ev.pk,
                "version_type": "external",
            });
            match (ev.op, &ev.after) {
                (ChangeOp::Delete, _) => vec![json!({ "delete": target })],
                (_, Some(Value::Object(after))) => {
                    let mut doc = after.clone();
                    doc.insert("_fraiseql".into(), meta);
                    vec![json!({ "index": target }), Value::Object(doc)]
                }
                _ => {
                    return Err(SinkError::Encode(
                        "an INSERT or UPDATE without an `after` object".into(),
                    ));
                }
            }
        }
        DocumentId::Event => {
            let mut doc = ev.document();
            doc["_fraiseql"] = meta;
            vec![json!({ "create": { "_index": index, "_id": ev.id } }), doc]
        }
    };
    let mut out = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut out, &l).map_err(|e| SinkError::Encode(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Reads a `_bulk` answer into per-item outcomes.
pub fn read_bulk_response(batch: &Batch, body: &Value) -> Result<Ack, SinkError> {
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| SinkError::Protocol("a _bulk answer without `items`".into()))?;
    if items.len() != batch.records.len() {
        return Err(SinkError::Protocol(format!(
            "{} items answered for {} sent",
            items.len(),
            batch.records.len()
        )));
    }
    let mut ack = Ack::default();
    for (index, item) in items.iter().enumerate() {
        let Some((action, result)) = item.as_object().and_then(|o| o.iter().next()) else {
            return Err(SinkError::Protocol(format!(
                "item {index} is not an object"
            )));
        };
        let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
        match status {
            200..=299 => ack.applied += 1,
            409 => ack.already += 1,
            404 if action == "delete" => ack.applied += 1,
            429 | 500..=599 => ack.retry.push(index),
            _ => {
                let err = result.get("error");
                let reason = match err {
                    Some(Value::Object(e)) => format!(
                        "{}: {}",
                        e.get("type").and_then(Value::as_str).unwrap_or("error"),
                        e.get("reason").and_then(Value::as_str).unwrap_or("")
                    ),
                    Some(other) => other.to_string(),
                    None => "refused".into(),
                };
                ack.refused.push(Refused {
                    index,
                    status: u16::try_from(status).ok(),
                    reason,
                });
            }
        }
    }
    Ok(ack)
}

#[async_trait::async_trait]
impl Sink for Elasticsearch {
    fn encode(&self, position: Position, event: &ChangeEvent) -> Result<Vec<u8>, SinkError> {
        encode_item(&self.index, self.id, position, event)
    }

    async fn send(&self, batch: &Batch) -> Result<Ack, SinkError> {
        let r = self
            .client
            .post(self.endpoint("_bulk"))
            .header("content-type", "application/x-ndjson")
            .body(batch.body())
            .send()
            .await
            .map_err(|e| SinkError::Unavailable(describe(e)))?;
        let status = r.status().as_u16();
        let text = r
            .text()
            .await
            .map_err(|e| SinkError::Unavailable(describe(e)))?;
        if status != 200 {
            return Err(SinkError::Rejected {
                status,
                body: text.chars().take(500).collect(),
            });
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| SinkError::Protocol(format!("_bulk answer is not JSON: {e}")))?;
        read_bulk_response(batch, &body)
    }

    async fn reach(&self) -> Result<String, SinkError> {
        let r = self
            .client
            .get(self.endpoint(""))
            .send()
            .await
            .map_err(|e| SinkError::Unavailable(describe(e)))?;
        let status = r.status().as_u16();
        if status != 200 {
            return Err(SinkError::Rejected {
                status,
                body: String::new(),
            });
        }
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let version = v
            .pointer("/version/number")
            .and_then(Value::as_str)
            .unwrap_or("unknown version");
        Ok(format!("Elasticsearch {version}, index {}", self.index))
    }
}

/// The index template (for every index the pattern can produce) and an ILM policy, each
/// after the request that installs it.
pub fn ddl(cfg: &SinkConfig) -> String {
    let policy = format!("fraiseql-{}", cfg.name);
    let pattern = cfg.index.replace("{entity}", "*").replace("{month}", "*");
    let template = json!({
        "index_patterns": [pattern],
        "priority": 100,
        "template": {
            "settings": {
                "index.lifecycle.name": policy,
                // Tombstones of deletes keep their version this long: a change older than a
                // delete arriving within it is refused (409), not applied.
                "index.gc_deletes": "1h",
            },
            "mappings": {
                "dynamic": true,
                "properties": {
                    "_fraiseql": {
                        "properties": {
                            "pk": {"type": "long"},
                            "txid": {"type": "long"},
                            "event_id": {"type": "keyword"},
                            "op": {"type": "keyword"},
                            "occurred_at": {"type": "date"},
                        }
                    }
                }
            }
        }
    });
    let ilm = json!({
        "policy": {
            "phases": {
                "hot": {"actions": {"rollover": {"max_age": "30d", "max_primary_shard_size": "50gb"}}},
                "delete": {"min_age": "365d", "actions": {"delete": {}}}
            }
        }
    });
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    format!(
        "# FraiseQL sink \"{name}\": index pattern {index} (_id = {id}).\n\
         PUT _ilm/policy/{policy}\n{ilm}\n\n\
         PUT _index_template/fraiseql-{name}\n{template}\n",
        name = cfg.name,
        index = cfg.index,
        id = match cfg.document_id {
            DocumentId::Entity => "entity id",
            DocumentId::Event => "change id",
        },
        ilm = pretty(&ilm),
        template = pretty(&template),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(op: &str, after: Value) -> ChangeEvent {
        serde_json::from_value(json!({
            "pk": 7, "id": "11111111-2222-3333-4444-555555555555",
            "occurred_at": "2026-12-04T18:00:01Z", "entity": "BlogPost",
            "entity_id": "6f1c2b1e-8a4e-4b7a-9d55-0a6f3f0b2a11", "op": op,
            "before": null, "after": after, "changed_fields": null, "actor": null,
            "tenant_id": null, "trace_id": null
        }))
        .unwrap()
    }

    #[test]
    fn entity_documents_carry_external_versions() {
        let p = Position { txid: 3, pk: 7 };
        let out = encode_item(
            "fx-{entity}",
            DocumentId::Entity,
            p,
            &event("UPDATE", json!({"title": "t"})),
        )
        .unwrap();
        let lines: Vec<Value> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["index"]["_index"], "fx-blogpost");
        assert_eq!(lines[0]["index"]["version"], 7);
        assert_eq!(lines[0]["index"]["version_type"], "external");
        assert_eq!(lines[1]["title"], "t");
        let del = encode_item(
            "fx-{entity}",
            DocumentId::Entity,
            p,
            &event("DELETE", Value::Null),
        )
        .unwrap();
        assert_eq!(del.iter().filter(|b| **b == b'\n').count(), 1);
        let ev = encode_item(
            "ev-{entity}-{month}",
            DocumentId::Event,
            p,
            &event("INSERT", json!({})),
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&ev).contains("\"_index\":\"ev-blogpost-2026.12\""));
    }

    #[test]
    fn bulk_outcomes_per_item() {
        let rec = |i: i64| super::super::Record {
            position: Position { txid: 1, pk: i },
            event: event("INSERT", json!({})),
            encoded: Vec::new(),
        };
        let batch = Batch {
            records: (0..5).map(rec).collect(),
            bytes: 0,
        };
        let body = json!({"errors": true, "items": [
            {"index": {"status": 201}},
            {"index": {"status": 409}},
            {"index": {"status": 429}},
            {"delete": {"status": 404}},
            {"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad"}}},
        ]});
        let ack = read_bulk_response(&batch, &body).unwrap();
        assert_eq!(
            (ack.applied, ack.already, ack.retry.clone()),
            (2, 1, vec![2])
        );
        assert_eq!(ack.refused.len(), 1);
        assert_eq!(ack.refused[0].index, 4);
        assert!(ack.refused[0].reason.contains("mapper_parsing_exception"));
        let short = json!({"items": []});
        assert!(read_bulk_response(&batch, &short).is_err());
    }
}

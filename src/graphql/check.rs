//! `fraiseql check` support: verifies that every view and function the schema names exists
//! in the database, and that views have a `data jsonb` column.

use crate::sql::mutation::{SIGNATURE_SQL, split_name};
use crate::sql::quote_qualified;

use super::Engine;

/// The result of checking one database object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    /// `view` or `function`.
    pub kind: &'static str,
    pub name: String,
    /// What uses it (`query users`, `mutation createPost`).
    pub used_by: String,
    pub ok: bool,
    pub message: String,
}

impl Engine {
    /// Checks the views and functions the schema names.
    pub async fn check_database(&self, client: &tokio_postgres::Client) -> Vec<CheckItem> {
        let mut out = Vec::new();
        let mut views: Vec<(String, Vec<String>)> = Vec::new();
        for q in &self.schema.queries {
            match views.iter_mut().find(|(v, _)| v == &q.view) {
                Some((_, users)) => users.push(format!("query {}", q.name)),
                None => views.push((q.view.clone(), vec![format!("query {}", q.name)])),
            }
        }
        for (view, users) in views {
            let used_by = users.join(", ");
            let res = client
                .query_one(
                    "SELECT to_regclass($1::text) IS NOT NULL, \
                     (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                       WHERE a.attrelid = to_regclass($1::text) AND a.attname = 'data' AND NOT a.attisdropped), \
                     (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                       WHERE a.attrelid = to_regclass($1::text) AND a.attname = 'id' AND NOT a.attisdropped)",
                    &[&quote_qualified(&view)],
                )
                .await;
            let (ok, message) = match res {
                Err(e) => (false, format!("cannot check: {e}")),
                Ok(row) => {
                    let exists: bool = row.get(0);
                    let data: Option<String> = row.get(1);
                    let id: Option<String> = row.get(2);
                    match (exists, data.as_deref(), id.as_deref()) {
                        (false, _, _) => (false, "does not exist".to_owned()),
                        (true, None, _) => (false, "has no `data` column".to_owned()),
                        (true, Some(t), _) if t != "jsonb" => {
                            (false, format!("`data` is {t}, not jsonb"))
                        }
                        (true, Some(_), None) => (
                            false,
                            "has no `id` column (needed for id lookups)".to_owned(),
                        ),
                        (true, Some(_), Some(_)) => (true, "ok: `data jsonb` and `id`".to_owned()),
                    }
                }
            };
            out.push(CheckItem {
                kind: "view",
                name: view,
                used_by,
                ok,
                message,
            });
        }
        for m in &self.schema.mutations {
            let (schema, name) = split_name(&m.function);
            let res = client.query(SIGNATURE_SQL, &[&schema, &name]).await;
            let (ok, message) = match res {
                Err(e) => (false, format!("cannot check: {e}")),
                Ok(rows) if rows.is_empty() => (false, "does not exist".to_owned()),
                Ok(rows) => {
                    let names: Vec<String> = rows[0].get(0);
                    let types: Vec<String> = rows[0].get(1);
                    let sig: Vec<String> = names
                        .iter()
                        .zip(&types)
                        .map(|(n, t)| {
                            if n.is_empty() {
                                t.clone()
                            } else {
                                format!("{n} {t}")
                            }
                        })
                        .collect();
                    (true, format!("ok: ({})", sig.join(", ")))
                }
            };
            out.push(CheckItem {
                kind: "function",
                name: m.function.clone(),
                used_by: format!("mutation {}", m.name),
                ok,
                message,
            });
        }
        out
    }
}

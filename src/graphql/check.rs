//! `fraiseql check` support: verifies that every view and function the schema names exists
//! in the database, that views have a `data jsonb` column, and which way each query's
//! `inject_params` filters (as the engine decides: the view's column of the parameter's
//! name, else the `data` key), refusing a parameter the view can filter neither way.

use crate::sql::mutation::{SIGNATURE_SQL, split_name};
use crate::sql::quote_qualified;

use super::Engine;

/// Rows of a view sampled for a `data` key no field of the type declares.
const KEY_SAMPLE_ROWS: i64 = 100;

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
                name: view.clone(),
                used_by: used_by.clone(),
                ok,
                message,
            });
            if self.read_tables
                && let Some(table) = super::source::table_copy_of(&view)
            {
                let (ok, message) = match super::source::resolve(client, &view, true).await {
                    Err(e) => (false, format!("cannot check: {}", crate::db::describe(&e))),
                    Ok(r) => match (r.source.table, r.skipped) {
                        (Some(_), _) => {
                            let generated: Vec<&str> = r
                                .source
                                .columns
                                .keys()
                                .filter(|c| !["id", "data"].contains(&c.as_str()))
                                .map(String::as_str)
                                .collect();
                            (
                                true,
                                if generated.is_empty() {
                                    format!("ok: read instead of {view} (graphql.read_tables)")
                                } else {
                                    let mut generated = generated;
                                    generated.sort_unstable();
                                    format!(
                                        "ok: read instead of {view} (graphql.read_tables); columns for conditions: {}",
                                        generated.join(", ")
                                    )
                                },
                            )
                        }
                        (None, Some(why)) => (false, why),
                        (None, None) => (true, format!("absent: {view} is read")),
                    },
                };
                out.push(CheckItem {
                    kind: "table",
                    name: table,
                    used_by,
                    ok,
                    message,
                });
            }
        }
        out.extend(self.check_inject(client).await);
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

impl Engine {
    /// One item per injected parameter of each query: the path its filter takes — the
    /// view's column of that name, else `data ->> '<param>'` — and a failure when the view
    /// has no such column and the `data` key cannot be verified (no field of the type
    /// stores it and none of the first rows has it): every row would be filtered out.
    async fn check_inject(&self, client: &tokio_postgres::Client) -> Vec<CheckItem> {
        let mut out = Vec::new();
        for q in self.schema.queries.iter().filter(|q| !q.inject.is_empty()) {
            // The relation the engine reads (the view or its `tv_` copy), with its columns.
            let resolved = super::source::resolve(client, &q.view, self.read_tables).await;
            let read = resolved
                .as_ref()
                .ok()
                .and_then(|r| r.source.table.clone())
                .unwrap_or_else(|| q.view.clone());
            let view = quote_qualified(&read);
            let columns = resolved.map(|r| {
                if r.view_exists {
                    r.source.columns.into_iter().collect::<Vec<_>>()
                } else {
                    Vec::new()
                }
            });
            let object = self.schema.object(&q.return_type);
            for inj in &q.inject {
                let (ok, message) = match &columns {
                    Err(e) => (false, format!("cannot check: {e}")),
                    Ok(c) if c.is_empty() => (false, format!("view {} does not exist", q.view)),
                    Ok(c) => match c.iter().find(|(name, _)| *name == inj.param) {
                        Some((_, ty)) => (
                            true,
                            format!(
                                "ok: filters on the view's column `{}` ({ty}) = claim `{}`",
                                inj.param, inj.claim
                            ),
                        ),
                        None if !c.iter().any(|(name, _)| name == "data") => (
                            false,
                            format!(
                                "the view has neither a column `{}` nor a `data` column",
                                inj.param
                            ),
                        ),
                        None => {
                            let field =
                                object.and_then(|o| o.fields.iter().find(|f| f.key == inj.param));
                            match field {
                                Some(f) => (
                                    true,
                                    format!(
                                        "ok: filters on `data ->> '{}'` (field {}.{}) = claim `{}`",
                                        inj.param, q.return_type, f.name, inj.claim
                                    ),
                                ),
                                None => self.sample_data_key(client, &view, q, inj).await,
                            }
                        }
                    },
                };
                out.push(CheckItem {
                    kind: "inject",
                    name: format!("{}.{}", q.view, inj.param),
                    used_by: format!("query {}", q.name),
                    ok,
                    message,
                });
            }
        }
        out
    }

    /// A `data` key no field declares: verified when some of the view's first rows hold it.
    async fn sample_data_key(
        &self,
        client: &tokio_postgres::Client,
        view: &str,
        q: &crate::schema::QueryField,
        inj: &crate::schema::InjectParam,
    ) -> (bool, String) {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE s.data ? $1), count(*) \
             FROM (SELECT \"data\" FROM {view} LIMIT $2) s"
        );
        match client
            .query_one(&sql, &[&inj.param, &KEY_SAMPLE_ROWS])
            .await
        {
            Err(e) => (
                false,
                format!(
                    "cannot check the `data` key `{}`: {}",
                    inj.param,
                    crate::db::describe(&e)
                ),
            ),
            Ok(row) => {
                let (with_key, sampled): (i64, i64) = (row.get(0), row.get(1));
                if with_key > 0 {
                    (
                        true,
                        format!(
                            "ok: filters on `data ->> '{}'` = claim `{}` (no field of {} \
                             declares the key; {with_key} of the first {sampled} rows hold it)",
                            inj.param, inj.claim, q.return_type
                        ),
                    )
                } else {
                    (
                        false,
                        format!(
                            "the view has no column `{p}` and its `data` key `{p}` cannot be \
                             verified (no field of {t} declares it, and none of the first \
                             {sampled} rows holds it): the filter would match no row; add a \
                             column `{p}` to the view",
                            p = inj.param,
                            t = q.return_type
                        ),
                    )
                }
            }
        }
    }
}

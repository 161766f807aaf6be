//! `fraiseql generate-views`: derives, from the compiled schema and the database catalog, the
//! stored copies of the read views (`tv_<entity>`, and the typed `ta_`/`va_` forms that feed
//! Flight) and the triggers that keep them equal to their views.
//!
//! Nothing is hand-written per schema. For each entity view `v_<entity>` this module reads
//! ([`plan`]):
//! - the view's dependency closure: `pg_depend` rows of its `pg_rewrite` rule, recursively
//!   through the views it reads, down to base tables; each relation weighted by how many
//!   range-table entries name it (`pg_rewrite.ev_action`), because a view that joins a table
//!   twice (an order's customer, and that customer's other orders) depends on it twice;
//! - its root table (`tb_<entity>`, the table whose `id` the view's `id` is);
//! - the foreign keys (`pg_constraint`) among the closure's tables. Every walk along them,
//!   forwards (child row → the parent it names) or backwards (parent → its children), from
//!   a base table to the root, visiting each table at most as often as the closure names it,
//!   is a way one changed row can change some entity rows. A table of the closure with no
//!   such walk is refused ("tb_x: no foreign key leads to tb_order"): a trigger for it could
//!   not know which rows to refresh, and a trigger that misses changes is worse than none.
//!
//! [`emit`] turns the plans into deterministic SQL (the same catalog gives the same text);
//! `roles::generate_views` writes it (`-o`), applies it in one transaction (`--apply`, with
//! the chunked initial fill) or compares copies with views (`--check`). `graphql.read_tables`
//! (`graphql::source`) then serves queries from the copies.

pub mod emit;

use std::collections::{BTreeMap, BTreeSet};

use crate::schema::{CompiledSchema, NamedKind, ScalarKind};
use crate::sql::quote_ident;

/// A walk longer than this many foreign keys is not followed (and, when no shorter walk
/// exists, the table is refused rather than left untracked).
const MAX_HOPS: usize = 8;
/// More walks than this from one table is refused: the triggers would be too costly to run.
const MAX_PATHS: usize = 256;
/// Views nested deeper than this are refused (a cycle is impossible, but the catalog is
/// input).
const MAX_VIEW_DEPTH: usize = 32;

/// Why a copy cannot be generated. The messages name the object and what is missing.
#[derive(Debug, thiserror::Error)]
pub enum GenViewsError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Refused(String),
    #[error("--entity {0}: no type of the schema reads a view by that name")]
    UnknownEntity(String),
    #[error("--index {0}")]
    BadIndex(String),
}

/// A relation of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rel {
    pub schema: String,
    pub name: String,
    pub oid: u32,
}

impl Rel {
    /// `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
    /// The relation of the same schema named `name`, quoted.
    pub fn sibling(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(name))
    }
}

/// One step of a walk: the next table, and the join columns (next table's column = the
/// previous table's column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub table: Rel,
    pub on: Vec<(String, String)>,
}

/// The walks from one base table's changed rows to the root table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub table: Rel,
    /// Each walk; an empty walk is the root table itself (its rows' own `id`).
    pub paths: Vec<Vec<Hop>>,
}

/// A typed column of `ta_`/`va_` and of `--index`: the name, its SQL type and the
/// expression over `data` (alias-free: `data->>'key'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataColumn {
    pub name: String,
    pub sql_type: &'static str,
    pub expr: String,
}

/// Everything the SQL of one entity is made from.
#[derive(Debug, Clone)]
pub struct EntityPlan {
    /// `post` for `v_post`.
    pub entity: String,
    pub view: Rel,
    pub root: Rel,
    /// The view's columns other than `id` and `data`, with their types, copied as they are
    /// (so `graphql.read_tables` can stand the copy in for the view).
    pub view_columns: Vec<(String, String)>,
    /// Sorted by table name.
    pub sources: Vec<Source>,
    /// One typed column per scalar field of the type (`ta_`/`va_`).
    pub scalar_columns: Vec<DataColumn>,
    /// `--index` columns that are not already view columns.
    pub index_columns: Vec<DataColumn>,
    /// `--index` names of view columns (indexed as they are).
    pub indexed_view_columns: Vec<String>,
}

/// Which forms to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Kind {
    /// `tv_<entity>(id, <view columns>, data, updated_at)`, trigger-maintained.
    Tv,
    /// `ta_<entity>`: one typed column per scalar field, trigger-maintained, BRIN on
    /// timestamps.
    Ta,
    /// `va_<entity>`: the same typed columns as a view over `v_<entity>`.
    Va,
}

/// The entities of the schema: view name → entity name, for every distinct `v_` view a type
/// reads, optionally only those named (by type name, e.g. `Post`, or entity, e.g. `post`).
pub fn entities(
    schema: &CompiledSchema,
    only: &[String],
) -> Result<Vec<(String, String)>, GenViewsError> {
    let mut all: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for t in &schema.types {
        let Some(view) = &t.sql_source else { continue };
        let name = view.rsplit('.').next().unwrap_or(view);
        let Some(entity) = name.strip_prefix("v_").filter(|e| !e.is_empty()) else {
            continue;
        };
        all.entry(view.clone())
            .or_insert_with(|| (entity.to_owned(), Vec::new()))
            .1
            .push(t.name.clone());
    }
    for o in only {
        if !all
            .values()
            .any(|(e, types)| e == o || types.iter().any(|t| t == o))
        {
            return Err(GenViewsError::UnknownEntity(o.clone()));
        }
    }
    Ok(all
        .into_iter()
        .filter(|(_, (e, types))| {
            only.is_empty() || only.iter().any(|o| o == e || types.contains(o))
        })
        .map(|(view, (entity, _))| (view, entity))
        .collect())
}

const REL_SQL: &str = "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.oid = to_regclass($1::text)";

/// The relations a view's rule reads (pg_depend of its pg_rewrite row), with how many
/// range-table entries name each (`:rtekind 0` is a relation entry in the rule's tree).
const DEPS_SQL: &str = "SELECT DISTINCT d.refobjid, n.nspname::text, c.relname::text, c.relkind::text, \
       greatest(1, (SELECT count(*) FROM regexp_matches(r.ev_action::text, \
           ':rtekind 0 :relid ' || d.refobjid::text || ' ', 'g')))::int8 \
     FROM pg_rewrite r \
     JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
      AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class \
     JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE r.ev_class = $1::oid";

const COLS_SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
     FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

const FKS_SQL: &str = "SELECT con.conname::text, con.conrelid, con.confrelid, \
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i) \
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i), \
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i) \
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) \
     FROM pg_constraint con \
     WHERE con.contype = 'f' AND con.conrelid = ANY($1::oid[]) AND con.confrelid = ANY($1::oid[]) \
     ORDER BY con.conname, con.conrelid";

#[derive(Debug, Clone)]
struct Fk {
    from: u32,
    to: u32,
    from_cols: Vec<String>,
    to_cols: Vec<String>,
}

async fn relation(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<Option<(Rel, String)>, GenViewsError> {
    let row = client
        .query_opt(REL_SQL, &[&crate::sql::quote_qualified(name)])
        .await?;
    Ok(row.map(|r| {
        (
            Rel {
                oid: r.get(0),
                schema: r.get(1),
                name: r.get(2),
            },
            r.get(3),
        )
    }))
}

/// Adds to `tables` every base table `view` reads (through other views), weighted.
async fn closure(
    client: &tokio_postgres::Client,
    view: &Rel,
    weight: i64,
    depth: usize,
    tables: &mut BTreeMap<u32, (Rel, i64)>,
) -> Result<(), GenViewsError> {
    if depth > MAX_VIEW_DEPTH {
        return Err(GenViewsError::Refused(format!(
            "{}: views nested more than {MAX_VIEW_DEPTH} deep",
            view.name
        )));
    }
    let rows = client.query(DEPS_SQL, &[&view.oid]).await?;
    let mut deps: Vec<(Rel, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                Rel {
                    oid: r.get(0),
                    schema: r.get(1),
                    name: r.get(2),
                },
                r.get(3),
                r.get(4),
            )
        })
        .collect();
    deps.sort();
    for (rel, kind, count) in deps {
        match kind.as_str() {
            "r" | "p" => {
                tables.entry(rel.oid).or_insert_with(|| (rel.clone(), 0)).1 += weight * count;
            }
            "v" => Box::pin(closure(client, &rel, weight * count, depth + 1, tables)).await?,
            other => {
                let what = match other {
                    "m" => "a materialized view",
                    "f" => "a foreign table",
                    _ => "a relation whose changes cannot be tracked",
                };
                return Err(GenViewsError::Refused(format!(
                    "{}: read by {} is {what}; no trigger can follow its changes",
                    rel.name, view.name
                )));
            }
        }
    }
    Ok(())
}

/// Every walk from `start` to `root` along `fks`, each table visited at most `limit` times.
fn walks(
    start: u32,
    root: u32,
    fks: &[Fk],
    limit: &BTreeMap<u32, (Rel, i64)>,
) -> Result<Vec<Vec<Hop>>, ()> {
    struct Walk<'a> {
        root: u32,
        fks: &'a [Fk],
        limit: &'a BTreeMap<u32, (Rel, i64)>,
        visits: BTreeMap<u32, i64>,
        hops: Vec<Hop>,
        /// (fk index, forward) of each hop, to skip going back along the key just used
        /// backwards (parent → child → the same parent is the parent itself).
        keys: Vec<(usize, bool)>,
        out: Vec<Vec<Hop>>,
    }
    impl Walk<'_> {
        fn go(&mut self, at: u32) -> Result<(), ()> {
            if at == self.root {
                if self.out.len() >= MAX_PATHS {
                    return Err(());
                }
                if !self.out.contains(&self.hops) {
                    self.out.push(self.hops.clone());
                }
            }
            if self.hops.len() >= MAX_HOPS {
                return Ok(());
            }
            for (i, fk) in self.fks.iter().enumerate() {
                for forward in [true, false] {
                    let (here, next) = if forward {
                        (fk.from, fk.to)
                    } else {
                        (fk.to, fk.from)
                    };
                    if here != at || (forward && self.keys.last() == Some(&(i, false))) {
                        continue;
                    }
                    let max = self.limit.get(&next).map_or(0, |(_, n)| *n);
                    let seen = self.visits.get(&next).copied().unwrap_or(0);
                    if seen >= max {
                        continue;
                    }
                    let Some((rel, _)) = self.limit.get(&next) else {
                        continue;
                    };
                    let on = if forward {
                        fk.to_cols
                            .iter()
                            .cloned()
                            .zip(fk.from_cols.iter().cloned())
                            .collect()
                    } else {
                        fk.from_cols
                            .iter()
                            .cloned()
                            .zip(fk.to_cols.iter().cloned())
                            .collect()
                    };
                    self.hops.push(Hop {
                        table: rel.clone(),
                        on,
                    });
                    self.keys.push((i, forward));
                    *self.visits.entry(next).or_insert(0) += 1;
                    let r = self.go(next);
                    *self.visits.entry(next).or_insert(1) -= 1;
                    self.keys.pop();
                    self.hops.pop();
                    r?;
                }
            }
            Ok(())
        }
    }
    let mut w = Walk {
        root,
        fks,
        limit,
        visits: BTreeMap::from([(start, 1)]),
        hops: Vec::new(),
        keys: Vec::new(),
        out: Vec::new(),
    };
    w.go(start)?;
    Ok(w.out)
}

/// The SQL type of a scalar in a typed column, and the expression reading it from the text
/// of a `data` key. Timestamps and dates go through `fraiseql.tv_timestamptz`/`tv_date`
/// (immutable: generated columns require it, and the JSON holds ISO text with an offset).
fn scalar_sql(scalar: ScalarKind, text: &str) -> Option<(&'static str, String)> {
    Some(match scalar {
        ScalarKind::Id | ScalarKind::String => ("text", text.to_owned()),
        ScalarKind::Int => ("integer", format!("({text})::integer")),
        ScalarKind::BigInt => ("bigint", format!("({text})::bigint")),
        ScalarKind::Float => ("double precision", format!("({text})::double precision")),
        ScalarKind::Decimal => ("numeric", format!("({text})::numeric")),
        ScalarKind::Boolean => ("boolean", format!("({text})::boolean")),
        ScalarKind::Uuid => ("uuid", format!("({text})::uuid")),
        ScalarKind::DateTime => ("timestamptz", format!("fraiseql.tv_timestamptz({text})")),
        ScalarKind::Date => ("date", format!("fraiseql.tv_date({text})")),
        ScalarKind::Time => ("time", format!("({text})::time")),
        ScalarKind::Json => return None,
    })
}

/// The type of the entity view (the first type reading it, by name).
fn object_type<'a>(
    schema: &'a CompiledSchema,
    view: &str,
) -> Option<&'a crate::schema::ObjectType> {
    let mut types: Vec<_> = schema
        .types
        .iter()
        .filter(|t| t.sql_source.as_deref() == Some(view))
        .collect();
    types.sort_by(|a, b| a.name.cmp(&b.name));
    // The type whose name is the entity's (Order for v_order) when there is one.
    let entity = view
        .rsplit('.')
        .next()
        .unwrap_or(view)
        .trim_start_matches("v_");
    types
        .iter()
        .find(|t| t.name.to_lowercase() == entity.replace('_', ""))
        .or(types.first())
        .copied()
}

/// `a.b.c` → the column for that path of fields (GraphQL names or data keys).
fn index_column(
    schema: &CompiledSchema,
    ty: &crate::schema::ObjectType,
    path: &str,
) -> Result<(String, ScalarKind, String), GenViewsError> {
    let mut ty = ty;
    let mut keys = Vec::new();
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let f = ty
            .fields
            .iter()
            .find(|f| f.name == *part || f.key == *part)
            .ok_or_else(|| {
                GenViewsError::BadIndex(format!("{path}: {} has no field {part}", ty.name))
            })?;
        if f.ty.list {
            return Err(GenViewsError::BadIndex(format!(
                "{path}: {part} is a list; only single values can be a column"
            )));
        }
        keys.push(f.key.clone());
        let last = i + 1 == parts.len();
        match (f.ty.kind, last) {
            (NamedKind::Scalar(s), true) => {
                let name = keys.join("__");
                let mut expr = String::from("data");
                for (j, k) in keys.iter().enumerate() {
                    let op = if j + 1 == keys.len() { "->>" } else { "->" };
                    expr = format!("{expr}{op}{}", crate::sql::quote_literal(k));
                }
                return Ok((name, s, expr));
            }
            (NamedKind::Enum, true) => {
                let mut expr = String::from("data");
                for (j, k) in keys.iter().enumerate() {
                    let op = if j + 1 == keys.len() { "->>" } else { "->" };
                    expr = format!("{expr}{op}{}", crate::sql::quote_literal(k));
                }
                return Ok((keys.join("__"), ScalarKind::String, expr));
            }
            (NamedKind::Object, false) => {
                ty = schema
                    .types
                    .iter()
                    .find(|t| t.name == f.ty.name)
                    .ok_or_else(|| {
                        GenViewsError::BadIndex(format!("{path}: no type {}", f.ty.name))
                    })?;
            }
            _ => {
                return Err(GenViewsError::BadIndex(format!(
                    "{path}: {part} is not a scalar field"
                )));
            }
        }
    }
    Err(GenViewsError::BadIndex(format!("{path}: empty field path")))
}

/// Reads the catalog for one entity view and derives its plan, or refuses.
pub async fn plan(
    client: &tokio_postgres::Client,
    schema: &CompiledSchema,
    view_name: &str,
    entity: &str,
    index: &[String],
) -> Result<EntityPlan, GenViewsError> {
    let refuse = |m: String| Err(GenViewsError::Refused(m));
    let Some((view, kind)) = relation(client, view_name).await? else {
        return refuse(format!("{view_name}: no such view"));
    };
    if kind != "v" {
        return refuse(format!("{view_name}: not a view"));
    }
    let cols: Vec<(String, String)> = client
        .query(COLS_SQL, &[&view.oid])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if !cols.iter().any(|(n, t)| n == "id" && t == "uuid") {
        return refuse(format!("{view_name}: has no `id uuid` column"));
    }
    if !cols.iter().any(|(n, t)| n == "data" && t == "jsonb") {
        return refuse(format!("{view_name}: has no `data jsonb` column"));
    }
    let mut tables = BTreeMap::new();
    closure(client, &view, 1, 0, &mut tables).await?;
    let root_name = format!("tb_{entity}");
    let root = match tables.values().find(|(r, _)| r.name == root_name) {
        Some((r, _)) => r.clone(),
        None => {
            return refuse(format!(
                "{view_name}: its root table {root_name} is not among the tables it reads"
            ));
        }
    };
    let root_cols = client.query(COLS_SQL, &[&root.oid]).await?;
    if !root_cols
        .iter()
        .any(|r| r.get::<_, String>(0) == "id" && r.get::<_, String>(1) == "uuid")
    {
        return refuse(format!("{root_name}: has no `id uuid` column"));
    }
    let oids: Vec<u32> = tables.keys().copied().collect();
    let fks: Vec<Fk> = client
        .query(FKS_SQL, &[&oids])
        .await?
        .iter()
        .map(|r| Fk {
            from: r.get(1),
            to: r.get(2),
            from_cols: r.get(3),
            to_cols: r.get(4),
        })
        .collect();
    let mut sources = Vec::new();
    let mut by_name: Vec<&(Rel, i64)> = tables.values().collect();
    by_name.sort_by(|a, b| (&a.0.schema, &a.0.name).cmp(&(&b.0.schema, &b.0.name)));
    for (table, _) in by_name {
        let paths = walks(table.oid, root.oid, &fks, &tables).map_err(|()| {
            GenViewsError::Refused(format!(
                "{}: more than {MAX_PATHS} foreign-key walks lead to {root_name}",
                table.name
            ))
        })?;
        if paths.is_empty() {
            return refuse(format!(
                "{}: no foreign key leads to {root_name}",
                table.name
            ));
        }
        sources.push(Source {
            table: table.clone(),
            paths,
        });
    }
    let view_columns: Vec<(String, String)> = cols
        .iter()
        .filter(|(n, _)| n != "id" && n != "data")
        .cloned()
        .collect();

    let ty = object_type(schema, view_name);
    let mut scalar_columns = vec![];
    if let Some(ty) = ty {
        for f in &ty.fields {
            if f.ty.list || f.key == "id" {
                continue;
            }
            let scalar = match f.ty.kind {
                NamedKind::Scalar(s) => s,
                NamedKind::Enum => ScalarKind::String,
                _ => continue,
            };
            let text = format!("data->>{}", crate::sql::quote_literal(&f.key));
            if let Some((sql_type, expr)) = scalar_sql(scalar, &text) {
                scalar_columns.push(DataColumn {
                    name: f.key.clone(),
                    sql_type,
                    expr,
                });
            }
        }
    }
    let mut index_columns = Vec::new();
    let mut indexed_view_columns = Vec::new();
    for path in index {
        let Some(ty) = ty else {
            return Err(GenViewsError::BadIndex(format!(
                "{path}: no type reads {view_name}"
            )));
        };
        let (name, scalar, text) = index_column(schema, ty, path)?;
        if view_columns.iter().any(|(n, _)| *n == name) {
            indexed_view_columns.push(name);
            continue;
        }
        let (sql_type, expr) = scalar_sql(scalar, &text)
            .ok_or_else(|| GenViewsError::BadIndex(format!("{path}: JSON is not indexable")))?;
        index_columns.push(DataColumn {
            name,
            sql_type,
            expr,
        });
    }
    let names: BTreeSet<_> = index_columns.iter().map(|c| c.name.clone()).collect();
    if names.len() != index_columns.len() {
        return Err(GenViewsError::BadIndex("a field is named twice".into()));
    }
    Ok(EntityPlan {
        entity: entity.to_owned(),
        view,
        root,
        view_columns,
        sources,
        scalar_columns,
        index_columns,
        indexed_view_columns,
    })
}

/// Plans every entity of `list` (from [`entities`]), in order; the first refusal stops.
pub async fn plan_all(
    client: &tokio_postgres::Client,
    schema: &CompiledSchema,
    list: &[(String, String)],
    index: &[String],
) -> Result<Vec<EntityPlan>, GenViewsError> {
    let mut plans = Vec::new();
    for (view, entity) in list {
        // An index path applies to the entities whose type has its first field.
        let mine: Vec<String> = index
            .iter()
            .filter(|p| {
                let first = p.split('.').next().unwrap_or("");
                object_type(schema, view)
                    .is_some_and(|t| t.fields.iter().any(|f| f.name == first || f.key == first))
            })
            .cloned()
            .collect();
        plans.push(plan(client, schema, view, entity, &mine).await?);
    }
    Ok(plans)
}

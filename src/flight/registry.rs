//! The schema registry: every `va_*` view and `ta_*` table visible through the search path,
//! with its columns, their PostgreSQL types and the Arrow schema they stream as.
//!
//! Clients name views and columns; only names found here ever reach SQL, quoted from here.
//! The registry is loaded at startup and reloaded by DoAction `refresh` and by
//! [`RegistryHandle::refresh`] (which the main crate calls on SIGHUP). A reload swaps one
//! `Arc`, so running streams keep the snapshot they started with.

use crate::sql::quote_ident;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arrow_schema::{Schema, SchemaRef};

use super::types::PgType;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("database unavailable: {0}")]
    Pool(String),
    #[error("cannot read the catalog: {0}")]
    Catalog(String),
}

/// Whether a relation is a view (read only) or a table (DoPut may append to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    View,
    Table,
}

/// One column of a registered relation.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub pg: PgType,
    /// Declared `NOT NULL` (tables only; view columns are always nullable).
    pub not_null: bool,
    /// The SQL name of the column's base type without modifiers (`numeric`,
    /// `timestamp with time zone`, `integer[]`): filter values are cast to it.
    pub sql_type: String,
    /// The type OID of the base type, checked against what a query returns.
    pub type_oid: u32,
    /// The element type OID of an array column (0 otherwise); DoPut writes it into each
    /// binary array value.
    pub elem_oid: u32,
}

/// A `va_` view or `ta_` table.
#[derive(Debug)]
pub struct Relation {
    pub schema_name: String,
    pub name: String,
    pub kind: RelationKind,
    pub columns: Vec<Column>,
    pub arrow_schema: SchemaRef,
}

impl Relation {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `"schema"."name"`, quoted.
    pub fn qualified(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema_name),
            quote_ident(&self.name)
        )
    }
}

/// One loaded state of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub relations: BTreeMap<String, Arc<Relation>>,
}

/// The registry shared by the service and whoever reloads it.
#[derive(Debug, Default)]
pub struct Registry {
    current: RwLock<Arc<Snapshot>>,
    /// Set once a load succeeded, so startup does not load twice.
    loaded: std::sync::atomic::AtomicBool,
}

/// A cloneable handle the main crate keeps to reload the registry (on SIGHUP).
#[derive(Clone)]
pub struct RegistryHandle {
    pub(crate) registry: Arc<Registry>,
    pub(crate) pool: deadpool_postgres::Pool,
}

impl RegistryHandle {
    /// Reloads the registry from the database; returns how many relations it now holds.
    pub async fn refresh(&self) -> Result<usize, RegistryError> {
        self.registry.refresh(&self.pool).await
    }

    /// The relations currently registered.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.registry.snapshot()
    }
}

const CATALOG_SQL: &str = r#"
SELECT n.nspname::text,
       c.relname::text,
       c.relkind::text,
       a.attname::text,
       bt.oid AS type_oid,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod,
       CASE WHEN bt.typcategory = 'A' AND bt.typlen = -1
            THEN CASE WHEN et.typtype = 'd' THEN et.typbasetype ELSE et.oid END END AS elem_oid,
       a.attnotnull AND c.relkind IN ('r', 'p') AS not_null,
       format_type(bt.oid, NULL) AS sql_type
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
  LEFT JOIN pg_type et ON et.oid = bt.typelem
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND (c.relname LIKE 'va\_%' OR c.relname LIKE 'ta\_%')
   AND n.nspname = ANY (current_schemas(false))
 ORDER BY array_position(current_schemas(false), n.nspname), c.relname, a.attnum
"#;

impl Registry {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs a snapshot (tests, and callers that build one themselves).
    pub fn replace(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a load has succeeded (or a snapshot was installed).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Relation>> {
        self.snapshot().relations.get(name).cloned()
    }

    pub async fn refresh(&self, pool: &deadpool_postgres::Pool) -> Result<usize, RegistryError> {
        let client = pool
            .get()
            .await
            .map_err(|e| RegistryError::Pool(e.to_string()))?;
        let rows = client
            .query(CATALOG_SQL, &[])
            .await
            .map_err(|e| RegistryError::Catalog(describe_pg(&e)))?;
        let mut building: BTreeMap<String, (String, RelationKind, Vec<Column>)> = BTreeMap::new();
        // Rows come ordered by search-path position: the first schema holding a name wins,
        // exactly as an unqualified name would resolve in SQL.
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for row in rows {
            let schema: String = row.get(0);
            let name: String = row.get(1);
            let relkind: String = row.get(2);
            if owner.get(&name).is_some_and(|s| *s != schema) {
                continue;
            }
            owner.insert(name.clone(), schema.clone());
            let type_oid: u32 = row.get(4);
            let typmod: i32 = row.get(5);
            let elem: Option<u32> = row.get(6);
            let kind = if matches!(relkind.as_str(), "r" | "p") && name.starts_with("ta_") {
                RelationKind::Table
            } else {
                RelationKind::View
            };
            let column = Column {
                name: row.get(3),
                pg: PgType::from_column(type_oid, typmod, elem),
                not_null: row.get(7),
                sql_type: row.get(8),
                type_oid,
                elem_oid: elem.unwrap_or(0),
            };
            building
                .entry(name)
                .or_insert_with(|| (schema, kind, Vec::new()))
                .2
                .push(column);
        }
        let relations: BTreeMap<String, Arc<Relation>> = building
            .into_iter()
            .map(|(name, (schema_name, kind, columns))| {
                let fields: Vec<_> = columns
                    .iter()
                    .map(|c| c.pg.field(&c.name, !c.not_null))
                    .collect();
                let rel = Relation {
                    schema_name,
                    name: name.clone(),
                    kind,
                    columns,
                    arrow_schema: Arc::new(Schema::new(fields)),
                };
                (name, Arc::new(rel))
            })
            .collect();
        let n = relations.len();
        self.replace(Snapshot { relations });
        tracing::info!(relations = n, "flight schema registry loaded");
        Ok(n)
    }
}

/// A database error's message and SQLSTATE, never the statement text.
pub use crate::db::describe as describe_pg;

//! Which relation a root query reads, and which of its columns a filter may use.
//!
//! A query names a view (`v_<entity>`). With `graphql.read_tables`, the view's table-backed
//! copy `tv_<entity>` (written by `fraiseql generate-views`, or by hand) is read instead
//! when it exists and can stand in for the view: a table (not a view) with `id` and
//! `data jsonb`, and every other column of the view with the same type, so injected row
//! filters and native-column conditions mean what they meant on the view. Of the table's
//! own columns, only stored generated columns (derived from `data`, so they hold the same
//! value as the key) are offered to the filter compiler; `updated_at` and any other
//! column the view lacks are left alone, because nothing says they equal a `data` key.
//!
//! Resolved once per engine ([`super::Engine::load_view_columns`]) and by `fraiseql check`,
//! through the same function, so both say the same thing.

use crate::sql::quote_qualified;
pub use crate::sql::select::ViewSource;

/// [`ViewSource`] with the reason a `tv_` copy was not used, for logs and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub source: ViewSource,
    /// The view's columns were found (an empty list means the view does not exist).
    pub view_exists: bool,
    /// Why the copy that exists is not read (`None` when it is read, or there is none).
    pub skipped: Option<String>,
}

/// The catalog's columns of a relation: name, SQL type, stored generated, and whether the
/// relation is a table (`r`/`p`). `$1` is the quoted relation name.
const COLUMNS_SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
     a.attgenerated = 's', c.relkind IN ('r', 'p') \
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
     WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";

/// `tv_<entity>` for `v_<entity>` (keeping a schema qualifier); `None` for any other name.
pub fn table_copy_of(view: &str) -> Option<String> {
    let (schema, name) = match view.rsplit_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, view),
    };
    let entity = name.strip_prefix("v_").filter(|e| !e.is_empty())?;
    Some(match schema {
        Some(s) => format!("{s}.tv_{entity}"),
        None => format!("tv_{entity}"),
    })
}

struct Column {
    name: String,
    ty: String,
    generated: bool,
}

async fn columns(
    client: &tokio_postgres::Client,
    relation: &str,
) -> Result<(Vec<Column>, bool), tokio_postgres::Error> {
    let rows = client
        .query(COLUMNS_SQL, &[&quote_qualified(relation)])
        .await?;
    let is_table = rows.first().is_some_and(|r| r.get::<_, bool>(3));
    let cols = rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            ty: r.get(1),
            generated: r.get(2),
        })
        .collect();
    Ok((cols, is_table))
}

/// What a query over `view` reads, looked up in the catalog.
pub async fn resolve(
    client: &tokio_postgres::Client,
    view: &str,
    read_tables: bool,
) -> Result<Resolved, tokio_postgres::Error> {
    let (view_cols, _) = columns(client, view).await?;
    let plain = Resolved {
        source: ViewSource {
            table: None,
            columns: view_cols
                .iter()
                .map(|c| (c.name.clone(), c.ty.clone()))
                .collect(),
        },
        view_exists: !view_cols.is_empty(),
        skipped: None,
    };
    let Some(table) = table_copy_of(view).filter(|_| read_tables) else {
        return Ok(plain);
    };
    let (table_cols, is_table) = columns(client, &table).await?;
    if table_cols.is_empty() {
        return Ok(plain);
    }
    let ty_of = |name: &str| {
        table_cols
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.ty.as_str())
    };
    let mut problems = Vec::new();
    if !is_table {
        problems.push(format!("{table} is not a table"));
    }
    match ty_of("data") {
        Some("jsonb") => {}
        Some(t) => problems.push(format!("its `data` is {t}, not jsonb")),
        None => problems.push("it has no `data` column".to_owned()),
    }
    if ty_of("id").is_none() {
        problems.push("it has no `id` column".to_owned());
    }
    for c in view_cols.iter().filter(|c| c.name != "data") {
        match ty_of(&c.name) {
            Some(t) if t == c.ty => {}
            Some(t) => problems.push(format!("its `{}` is {t}, the view's is {}", c.name, c.ty)),
            None => problems.push(format!("it lacks the view's column `{}`", c.name)),
        }
    }
    if !view_cols.is_empty() && problems.is_empty() {
        let columns = table_cols
            .iter()
            .filter(|c| c.generated || view_cols.iter().any(|v| v.name == c.name))
            .map(|c| (c.name.clone(), c.ty.clone()))
            .collect();
        return Ok(Resolved {
            source: ViewSource {
                table: Some(table),
                columns,
            },
            view_exists: true,
            skipped: None,
        });
    }
    if view_cols.is_empty() {
        problems.push(format!("{view} itself does not exist"));
    }
    Ok(Resolved {
        skipped: Some(format!("{table} is not read: {}", problems.join("; "))),
        ..plain
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_of_a_view_keeps_its_schema() {
        assert_eq!(table_copy_of("v_user").as_deref(), Some("tv_user"));
        assert_eq!(table_copy_of("app.v_user").as_deref(), Some("app.tv_user"));
        assert_eq!(table_copy_of("user_view"), None);
        assert_eq!(table_copy_of("app.tv_user"), None);
        assert_eq!(table_copy_of("v_"), None);
    }
}

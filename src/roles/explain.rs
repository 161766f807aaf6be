//! `fraiseql explain`: the SQL statements a GraphQL operation compiles to, with their
//! parameters (or inlined, for psql and pgbench), and which path each `where`/`orderBy`
//! field took (a native column of the view, or its `data` key). The views' columns come from
//! the catalog of `database.url` when it answers within a few seconds; nothing else is read
//! and nothing runs.

use crate::config::Config;

/// Prints each root field's statement.
pub async fn run(
    config: &Config,
    query: String,
    variables: Option<String>,
    inline: bool,
) -> anyhow::Result<()> {
    if config.graphql.schema.is_empty() {
        anyhow::bail!("no schema: pass --schema PATH or set [graphql] schema");
    }
    let engine = crate::compose::load_engine(config, &config.graphql.schema)?;
    // The server compiles against the views' native columns; so does explain, when the
    // database answers.
    let catalog = match crate::db::pool(&config.database) {
        Ok(pool) => {
            let loaded = tokio::time::timeout(
                std::time::Duration::from_secs(3),
                engine.load_view_columns(&pool),
            )
            .await;
            pool.close();
            loaded.is_ok() && engine.view_columns_loaded()
        }
        Err(_) => false,
    };
    if !catalog {
        println!(
            "-- the database's catalog was not read ({}): conditions use the data keys",
            crate::redact::redact_url(&config.database.url)
        );
    }
    let variables = match variables {
        Some(v) => Some(
            serde_json::from_str(&v)
                .map_err(|e| anyhow::anyhow!("--variables is not JSON: {e}"))?,
        ),
        None => None,
    };
    let request = crate::graphql::Request {
        query,
        operation_name: None,
        variables,
    };
    let statements = engine
        .explain(&request)
        .map_err(|body| anyhow::anyhow!("{body}"))?;
    for (field, stmt) in statements {
        println!("-- {field}");
        for note in &stmt.notes {
            println!("-- {note}");
        }
        if inline {
            println!("{};", crate::sql::inline_params(&stmt));
        } else {
            println!("{};", stmt.sql);
            for (i, p) in stmt.params.iter().enumerate() {
                println!("-- ${} = {}", i + 1, crate::sql::param_literal(p));
            }
        }
    }
    Ok(())
}

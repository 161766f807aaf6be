//! `fraiseql explain`: the SQL statements a GraphQL operation compiles to, with their
//! parameters (or inlined, for psql and pgbench), without touching the database.

use crate::config::Config;

/// Prints each root field's statement.
pub fn run(
    config: &Config,
    query: String,
    variables: Option<String>,
    inline: bool,
) -> anyhow::Result<()> {
    if config.graphql.schema.is_empty() {
        anyhow::bail!("no schema: pass --schema PATH or set [graphql] schema");
    }
    let engine = crate::compose::load_engine(config, &config.graphql.schema)?;
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

//! The `check` role: validate the configuration and reach every configured service, one
//! line per item. Returns whether everything passed; `main` turns that into the exit code.

use std::time::Duration;

use crate::config::{Config, redact_url};

/// One checked item.
#[derive(Debug)]
pub struct Item {
    pub name: String,
    pub result: Result<String, String>,
}

/// Runs every check; never fails early, so the user sees all problems at once.
pub async fn run(config: &Config) -> Vec<Item> {
    let mut items = Vec::new();
    let source = config
        .origins
        .file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "defaults and environment".into());
    items.push(Item {
        name: "config".into(),
        result: Ok(format!("valid ({source})")),
    });

    let db_name = format!("database {}", redact_url(&config.database.url));
    let result = match crate::db::pool(&config.database) {
        Ok(pool) => {
            let timeout = Duration::from_millis(config.database.connect_timeout_ms + 1000);
            let r = crate::db::ping(&pool, timeout)
                .await
                .map(|v| format!("PostgreSQL {v}"))
                .map_err(|e| e.to_string());
            pool.close();
            r
        }
        Err(e) => Err(e.to_string()),
    };
    items.push(Item {
        name: db_name,
        result,
    });
    items
}

/// Prints the items, one line each; true when all passed.
pub fn print(items: &[Item]) -> bool {
    let mut ok = true;
    for item in items {
        match &item.result {
            Ok(detail) => println!("ok    {}: {detail}", item.name),
            Err(e) => {
                ok = false;
                println!("FAIL  {}: {e}", item.name);
            }
        }
    }
    ok
}

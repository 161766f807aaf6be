//! `fraiseql dlq list|show|retry|purge`: the dead letters of the configured queue backend,
//! through the backend's `DeadLetterAdmin` (no command names a backend).

use std::process::ExitCode;

use crate::cli::DlqCommand;
use crate::config::Config;

/// Runs one `dlq` subcommand; the exit code is 1 when the dead letter named is missing or
/// could not be retried.
pub async fn run(command: DlqCommand, config: &Config) -> anyhow::Result<ExitCode> {
    use crate::queue::dlq::{ListFilter, RetryOutcome, format_table, parse_age};

    let pool = crate::db::pool(&config.database)?;
    // An operator's command: fail within seconds instead of waiting for the backend.
    let build = crate::queue::build(&config.queue, &pool, config.observer_runtime.queue_capacity);
    let store = tokio::time::timeout(std::time::Duration::from_secs(10), build)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot reach {} (queue.url) within 10 s",
                config.queue.location()
            )
        })??
        .dead_letters;
    let not_found = |id: i64| {
        eprintln!("error: no dead letter {id}");
        Ok(ExitCode::FAILURE)
    };
    match command {
        DlqCommand::List {
            json,
            observer,
            limit,
        } => {
            let filter = ListFilter {
                observer,
                limit: Some(limit),
            };
            let items = store.list(&filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", format_table(&items));
            }
        }
        DlqCommand::Show { id } => match store.show(id).await? {
            Some(item) => println!("{}", serde_json::to_string_pretty(&item)?),
            None => return not_found(id),
        },
        DlqCommand::Retry { id: Some(id), .. } => match store.retry(id).await? {
            RetryOutcome::Retried if store.retries_immediately() => {
                println!("dead letter {id} queued again")
            }
            RetryOutcome::Retried => println!("dead letter {id} handed back for retry"),
            RetryOutcome::AlreadyLive => {
                eprintln!(
                    "error: dead letter {id} not retried: a job with the same key is queued or running"
                );
                return Ok(ExitCode::FAILURE);
            }
            RetryOutcome::NotFound => return not_found(id),
        },
        DlqCommand::Retry { id: None, .. } => {
            let s = store.retry_all().await?;
            if store.retries_immediately() {
                println!(
                    "{} dead letters queued again ({} skipped: same key queued or running)",
                    s.retried, s.already_live
                );
            } else {
                println!("{} dead letters handed back for retry", s.retried);
            }
        }
        DlqCommand::Purge { older_than } => {
            let age = match older_than {
                Some(a) => Some(parse_age(&a).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?),
                None => None,
            };
            let n = store.purge(age).await?;
            println!("{n} dead letters purged");
        }
    }
    Ok(ExitCode::SUCCESS)
}

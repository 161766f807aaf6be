//! Entry point: parse the command line, load the configuration, start one role, and map
//! errors to exit codes (0 ok, 1 failure, 2 bad configuration or usage).

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use fraiseql::cli::{Cli, Command, DbCommand, DlqCommand};
use fraiseql::config::{Config, LogFormat, Overrides};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for every rustls user in the process (ring: pure Rust + asm,
    // links statically). Clients that need their own roots still build their own configs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut overrides = Overrides {
        log_format: cli.log_format,
        ..Default::default()
    };
    match &cli.command {
        Command::Serve { listen, schema, .. } => {
            overrides.listen = *listen;
            overrides.schema = schema.clone();
        }
        Command::Explain { schema, .. } => overrides.schema = schema.clone(),
        Command::Flight { listen, schema } => {
            overrides.flight_listen = listen.clone();
            overrides.schema = schema.clone();
        }
        Command::Worker {
            concurrency,
            listen,
        } => {
            overrides.worker_listen = *listen;
            overrides.worker_concurrency = *concurrency;
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { with_flight, .. } => {
            let shutdown = CancellationToken::new();
            fraiseql::shutdown::cancel_on_signals(shutdown.clone());
            fraiseql::serve::run(config, with_flight, shutdown).await?;
        }
        Command::Flight { .. } => {
            let shutdown = CancellationToken::new();
            fraiseql::shutdown::cancel_on_signals(shutdown.clone());
            fraiseql::serve::run_flight(config, shutdown).await?;
        }
        Command::Worker { .. } => {
            let shutdown = CancellationToken::new();
            fraiseql::shutdown::cancel_on_signals(shutdown.clone());
            fraiseql::worker::run(config, shutdown).await?;
        }
        Command::Db {
            command: DbCommand::Init,
        } => {
            let pool = fraiseql::db::pool(&config.database)?;
            let mut client = fraiseql::db::client(&pool).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to {}: {e}",
                    fraiseql::redact::redact_url(&config.database.url)
                )
            })?;
            let report = fraiseql::db::migrate::run(&mut client).await?;
            for (version, name) in &report.applied {
                println!("applied {version:04}_{name}");
            }
            println!(
                "fraiseql schema up to date ({} applied, {} already present)",
                report.applied.len(),
                report.already
            );
        }
        Command::Compile { input, output } => {
            let (compiled, warnings) = fraiseql::schema::compile_file(&input)?;
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let json = fraiseql::schema::to_compiled_json(&compiled);
            std::fs::write(&output, json)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
            println!(
                "compiled {} into {} ({} types, {} queries, {} mutations)",
                input.display(),
                output.display(),
                compiled.types.len(),
                compiled.queries.len(),
                compiled.mutations.len()
            );
        }
        Command::Explain {
            query,
            variables,
            inline,
            ..
        } => {
            if config.graphql.schema.is_empty() {
                anyhow::bail!("no schema: pass --schema PATH or set [graphql] schema");
            }
            let engine = fraiseql::serve::load_engine(&config, &config.graphql.schema)?;
            let variables = match variables {
                Some(v) => Some(
                    serde_json::from_str(&v)
                        .map_err(|e| anyhow::anyhow!("--variables is not JSON: {e}"))?,
                ),
                None => None,
            };
            let request = fraiseql::graphql::Request {
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
                    println!("{};", fraiseql::sql::inline_params(&stmt));
                } else {
                    println!("{};", stmt.sql);
                    for (i, p) in stmt.params.iter().enumerate() {
                        println!("-- ${} = {}", i + 1, fraiseql::sql::param_literal(p));
                    }
                }
            }
        }
        Command::Check => {
            let items = fraiseql::check::run(&config).await;
            if !fraiseql::check::print(&items) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Dlq { command } => return dlq(command, &config).await,
        Command::Dashboard => {
            use std::io::Write;
            std::io::stdout().write_all(&fraiseql::assets::dashboard())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `fraiseql dlq …` against the dead letters of the configured queue backend.
async fn dlq(command: DlqCommand, config: &Config) -> anyhow::Result<ExitCode> {
    use fraiseql::queue::dlq::{ListFilter, RetryOutcome, format_table, parse_age};

    let pool = fraiseql::db::pool(&config.database)?;
    // An operator's command: fail within seconds instead of waiting for the backend.
    let build =
        fraiseql::queue::build(&config.queue, &pool, config.observer_runtime.queue_capacity);
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

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("FRAISEQL_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

//! Entry point: parse the command line, load the configuration, start one role, and map
//! errors to exit codes (0 ok, 1 failure, 2 bad configuration or usage).

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use fraiseql::cli::{Cli, Command, DbCommand};
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
    // Before any configuration is read: a probe must not depend on it.
    if let Command::Health { url, timeout_ms } = &cli.command {
        return match runtime(false) {
            Ok(rt) => rt.block_on(health(url, *timeout_ms)),
            Err(code) => code,
        };
    }
    match &cli.command {
        Command::Serve { listen, schema, .. } => {
            overrides.listen = *listen;
            overrides.schema = schema.clone();
        }
        Command::Explain { schema, .. } | Command::GenerateViews { schema, .. } => {
            overrides.schema = schema.clone()
        }
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

    let runtime = match runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
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
    use fraiseql::roles;
    let shutdown = || {
        let token = CancellationToken::new();
        fraiseql::shutdown::cancel_on_signals(token.clone());
        token
    };
    match command {
        Command::Serve { with_flight, .. } => {
            roles::serve::run(config, with_flight, shutdown()).await?
        }
        Command::Flight { .. } => roles::flight::run(config, shutdown()).await?,
        Command::Worker { .. } => roles::worker::run(config, shutdown()).await?,
        Command::Db {
            command: DbCommand::Init,
        } => roles::db::init(&config).await?,
        Command::Db {
            command:
                DbCommand::Prune {
                    older_than,
                    dry_run,
                },
        } => roles::db::prune(&config, older_than.as_deref(), dry_run).await?,
        Command::Compile { input, output } => roles::compile::run(&input, &output)?,
        Command::Explain {
            query,
            variables,
            inline,
            ..
        } => roles::explain::run(&config, query, variables, inline).await?,
        Command::Check => {
            let items = roles::check::run(&config).await;
            if !roles::check::print(&items) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Dlq { command } => return roles::dlq::run(command, &config).await,
        Command::GenerateViews {
            entities,
            kinds,
            index,
            output,
            apply,
            check,
            ..
        } => {
            use roles::generate_views::{Args, Mode};
            let mode = match (output, apply, check) {
                (Some(path), _, _) => Mode::Write(path),
                (None, true, _) => Mode::Apply,
                (None, false, true) => Mode::Check,
                (None, false, false) => Mode::Print,
            };
            let mut kinds = if kinds.is_empty() {
                vec![fraiseql::genviews::Kind::Tv]
            } else {
                kinds
            };
            kinds.sort();
            kinds.dedup();
            let args = Args {
                entities,
                kinds,
                index,
                mode,
            };
            return roles::generate_views::run(&config, args).await;
        }
        Command::Health { url, timeout_ms } => return Ok(health(&url, timeout_ms).await),
        Command::Sink {
            command: fraiseql::cli::SinkCommand::Ddl { backend },
        } => print!("{}", roles::sink::ddl(&config, backend)),
        Command::Dashboard => {
            use std::io::Write;
            std::io::stdout().write_all(&fraiseql::assets::dashboard())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The async runtime: multi-threaded for the roles, one thread for a probe.
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// `fraiseql health` (see [`fraiseql::roles::health`]).
async fn health(url: &str, timeout_ms: u64) -> ExitCode {
    let timeout = std::time::Duration::from_millis(timeout_ms);
    match fraiseql::roles::health::probe(url, timeout).await {
        Ok(status) => {
            println!("ok    {url}: {status}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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

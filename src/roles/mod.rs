//! One module per subcommand. The long-running roles (`serve`, `worker`, `flight`) expose
//! `run(config, shutdown)` and stop on the one shutdown token; the one-shot commands
//! (`check`, `dlq`, `explain`, `compile`, `db`, `health`, `generate_views`, `sink`) take the
//! configuration and their arguments and return when done. Roles are built from the parts in [`crate::compose`]; `main.rs`
//! only parses the command line, loads the configuration and dispatches here.

pub mod check;
pub mod compile;
pub mod db;
pub mod dlq;
pub mod explain;
pub mod flight;
pub mod generate_views;
pub mod health;
pub mod serve;
pub mod sink;
pub mod worker;

//! One active instance per named consumer (an observer reader group, an analytics sink):
//! a session-level advisory lock on `hashtextextended(<name>, 0)`, held by a dedicated
//! session ([`super::session`]). The lock belongs to the connection, so when the active
//! instance dies (even by kill -9) PostgreSQL releases it as the socket closes and a
//! standby, retrying every interval, takes over.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// How waiting for leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// The lock is ours until the session ends.
    Acquired,
    /// `shutdown` was cancelled first.
    Shutdown,
    /// The session's connection ended first.
    Lost,
}

/// Tries `pg_try_advisory_lock` every `every` until it is ours; `standing_by` runs once, the
/// first time another instance holds it.
pub async fn acquire(
    client: &Client,
    lock_name: &str,
    every: Duration,
    shutdown: &CancellationToken,
    lost: &CancellationToken,
    standing_by: impl FnOnce(),
) -> Result<Leadership, tokio_postgres::Error> {
    let mut standing_by = Some(standing_by);
    loop {
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&lock_name],
            )
            .await?
            .get(0);
        if got {
            return Ok(Leadership::Acquired);
        }
        if let Some(f) = standing_by.take() {
            f();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Leadership::Shutdown),
            _ = lost.cancelled() => return Ok(Leadership::Lost),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

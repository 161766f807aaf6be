//! A Redis command connection: one multiplexed connection shared by every
//! operation, reopened after it broke, resolving the host name again each time through
//! [`crate::net`] (so a Redis that moved to a new address is found again).
//!
//! Why not redis-rs's `ConnectionManager`: in redis 1.8 it cannot be given a DNS resolver,
//! so it resolves through libc, which cannot resolve anything in the `FROM scratch` image.
//! What it did for us is small: keep one connection, and open a new one when a request
//! failed in a way that breaks the connection (`is_unrecoverable_error`, its own rule). The
//! waiting and retrying stay in the queue's own loops (`RedisQueue::eval`).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Cheap to clone; every clone shares the one connection.
#[derive(Clone)]
pub(crate) struct SharedConnection {
    inner: Arc<Inner>,
    /// The database the URL selects (`ConnectionLike::get_db`).
    db: i64,
}

struct Inner {
    client: Client,
    config: AsyncConnectionConfig,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    /// Counts the connections opened: a failure retires the connection only if it is still
    /// the one the failed request used (a concurrent request may have replaced it already).
    generation: u64,
    conn: Option<MultiplexedConnection>,
    /// The last failed connect, so that callers queued behind it share its answer instead
    /// of each waiting out its own connect timeout.
    failed: Option<(Instant, RedisError)>,
}

impl SharedConnection {
    /// No connection is made until the first request.
    pub(crate) fn new(
        client: Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_dns_resolver(crate::net::Resolver);
        let db = client.get_connection_info().redis_settings().db();
        SharedConnection {
            inner: Arc::new(Inner {
                client,
                config,
                slot: Mutex::default(),
            }),
            db,
        }
    }

    /// The open connection, or a new one (resolving the host again).
    async fn get(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let asked = Instant::now();
        let mut slot = self.inner.slot.lock().await;
        if let Some(conn) = &slot.conn {
            return Ok((slot.generation, conn.clone()));
        }
        if let Some((at, err)) = &slot.failed
            && *at >= asked
        {
            return Err(err.clone());
        }
        match self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&self.inner.config)
            .await
        {
            Ok(conn) => {
                slot.generation += 1;
                slot.conn = Some(conn.clone());
                slot.failed = None;
                Ok((slot.generation, conn))
            }
            Err(err) => {
                slot.failed = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    /// After a request on connection `generation` failed: retires that connection when the
    /// error broke it, so the next request opens a new one.
    async fn after_error(&self, generation: u64, err: &RedisError) {
        if !err.is_unrecoverable_error() {
            return;
        }
        let mut slot = self.inner.slot.lock().await;
        if slot.generation == generation {
            slot.conn = None;
        }
    }
}

impl ConnectionLike for SharedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.get().await?;
            let result = conn.req_packed_command(cmd).await;
            if let Err(err) = &result {
                self.after_error(generation, err).await;
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.get().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(err) = &result {
                self.after_error(generation, err).await;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

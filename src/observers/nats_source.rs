//! Observers fed from NATS JetStream instead of the PostgreSQL change log (`[nats] consume`).
//!
//! One change-log reader (the instance holding the reader lock) publishes every change to
//! `<prefix>.<entity>.<op>`; every instance runs this source on the shared durable pull
//! consumer, so the instances share the events. For each message the source matches the
//! change against the observers, enqueues its jobs, and only then acknowledges the message:
//! a crash before the ack means a redelivery, never a loss.
//!
//! That is only sound with a durable queue (Redis): with the in-process queue an acknowledged
//! message's jobs would die with the process, so the configuration refuses `consume` with
//! the memory backend. A message can arrive twice (a redelivery after an unconfirmed ack,
//! or after the NATS server itself restarted), so its jobs are marked `replay`: a job whose
//! key already succeeded within the dedup window is not run again, and a job still queued
//! absorbs the duplicate at enqueue (idempotent by key).
//!
//! A change larger than the server's `max_payload` arrives as a reference (`truncated`, no
//! row images): the source reads the full change from the change log by its `pk`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::dispatch::{Cursor, DispatchError, Dispatcher};
use super::matcher::ChangeEvent;
use crate::backoff::Backoff;
use crate::nats::{EventBus, NatsConfig};

/// Runs until `shutdown`. Unacknowledged messages in hand at shutdown are redelivered to
/// another instance after `ack_wait_ms`.
pub async fn run(
    config: NatsConfig,
    dispatcher: Dispatcher,
    pool: deadpool_postgres::Pool,
    shutdown: CancellationToken,
) {
    let bus = match EventBus::connect(&config, &shutdown).await {
        Ok(bus) => bus,
        Err(e) => {
            if !shutdown.is_cancelled() {
                tracing::error!(error = %e, "observers cannot consume from NATS");
            }
            return;
        }
    };
    // Doubling from `retry_min_delay_ms` to `retry_max_delay_ms`, exactly: the bus's own
    // connects and re-publishes already spread the instances with jitter.
    let mut backoff = Backoff::new(
        Duration::from_millis(config.retry_min_delay_ms.max(1)),
        Duration::from_millis(config.retry_max_delay_ms.max(1)),
    )
    .without_jitter();
    let consumer = loop {
        match bus.consumer().await {
            Ok(c) => break c,
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "creating the NATS consumer failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    backoff.reset();
    info!(durable = %config.durable, stream = %config.stream, "observers consuming from NATS JetStream");
    let batch = config.fetch_batch.max(1);
    loop {
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = consumer.fetch(batch, Duration::from_secs(1)) => f,
        };
        let deliveries = match fetched {
            Ok(d) => {
                backoff.reset();
                d
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "fetching from NATS failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        for d in deliveries {
            let ev = match serde_json::from_slice::<ChangeEvent>(&d.payload) {
                Ok(ev) => ev,
                Err(e) => {
                    // Not a change event (someone else published on our subjects): it can
                    // never succeed, so it is acknowledged and counted, not redelivered.
                    warn!(subject = %d.subject, error = %e, "NATS message is not a change event; dropped");
                    dispatcher.metrics.events_failed.inc();
                    if let Err(e) = d.ack().await {
                        warn!(error = %e, "acknowledging a dropped NATS message failed");
                    }
                    continue;
                }
            };
            let ev = if ev.truncated {
                // A change too large for one message: the full row is in the change log.
                match super::reader::load_change(&pool, ev.pk).await {
                    Ok(Some(full)) => full,
                    Ok(None) => {
                        warn!(
                            pk = ev.pk,
                            "a truncated NATS event's change is no longer in the change log; dropped"
                        );
                        dispatcher.metrics.events_failed.inc();
                        let _ = d.ack().await;
                        continue;
                    }
                    Err(e) => {
                        warn!(pk = ev.pk, error = %e, "reading a truncated NATS event's change failed; redelivering");
                        let _ = d.nak(Some(Duration::from_secs(1))).await;
                        continue;
                    }
                }
            } else {
                ev
            };
            match dispatcher
                .dispatch(Cursor::default(), &ev, true, &shutdown)
                .await
            {
                Ok(_) => {
                    if let Err(e) = d.ack().await {
                        // Redelivered later; its jobs then meet the dedup window.
                        warn!(pk = ev.pk, error = %e, "acknowledging a NATS message failed");
                    }
                }
                Err(DispatchError::Shutdown) => return,
                Err(e) => {
                    warn!(pk = ev.pk, error = %e, "enqueueing a NATS event's jobs failed; redelivering");
                    dispatcher.metrics.events_failed.inc();
                    let _ = d.nak(Some(Duration::from_secs(1))).await;
                }
            }
        }
    }
}

/// The dispatcher used by [`run`]: its tracker is private because JetStream acknowledgements,
/// not the change-log checkpoint, record what is done.
pub fn dispatcher(base: &Dispatcher) -> Dispatcher {
    Dispatcher {
        tracker: Arc::default(),
        ..base.clone()
    }
}

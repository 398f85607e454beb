//! The durable payment-timeout sweeper: a database query, never an in-memory timer. Every
//! replica runs it; `FOR UPDATE SKIP LOCKED` hands each expired order to exactly one of them.
//! A cancelled order publishes `OrderCancelled` (marketing gives seckill stock back and frees the
//! buyer's slot; a voucher it used is released) and its product stock is back in the same
//! transaction. Its checkout is then expired at the provider, best effort.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use crate::payments::PaymentProvider;
use crate::store::Store;

/// Orders cancelled per transaction.
const BATCH: i64 = 100;

/// The sweeper.
pub struct Sweeper {
    store: Store,
    provider: Arc<dyn PaymentProvider>,
    interval: Duration,
    cancelled: Counter,
}

impl Sweeper {
    /// Sweeps every `interval`.
    pub fn new(
        store: Store,
        provider: Arc<dyn PaymentProvider>,
        interval: Duration,
        cancelled: Counter,
    ) -> Self {
        Self {
            store,
            provider,
            interval,
            cancelled,
        }
    }

    /// One pass: cancels expired orders until none is left; returns how many.
    pub async fn sweep(&self) -> usize {
        let mut total = 0;
        loop {
            match self.store.sweep_expired(BATCH).await {
                Ok(cancelled) => {
                    let n = cancelled.len();
                    total += n;
                    self.cancelled.inc_by(n as u64);
                    for order in cancelled {
                        tracing::info!(order = %order.id, kind = %order.kind, "unpaid order cancelled");
                        if let Some(session) = &order.checkout_session_id
                            && let Err(err) = self.provider.expire_checkout(session).await
                        {
                            tracing::warn!(order = %order.id, error = %err, "could not expire the checkout");
                        }
                    }
                    if n < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                        return total;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "sweeping unpaid orders failed; will retry");
                    return total;
                }
            }
        }
    }

    /// Sends back payments that arrived after their order was cancelled and were not refunded
    /// yet (the webhook tries at once; this retries).
    pub async fn refund_late_payments(&self) {
        let late = match self.store.late_payments(BATCH).await {
            Ok(late) => late,
            Err(err) => {
                tracing::warn!(error = %err, "listing late payments failed");
                return;
            }
        };
        for (order, intent) in late {
            match self.provider.refund(order, &intent).await {
                Ok(refund) => {
                    if let Err(err) = self
                        .store
                        .record_late_refund(order, &refund.refund_id)
                        .await
                    {
                        tracing::warn!(%order, error = %err, "late refund not recorded");
                    }
                }
                Err(err) => tracing::warn!(%order, error = %err, "late payment not refunded yet"),
            }
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.sweep().await;
            self.refund_late_payments().await;
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

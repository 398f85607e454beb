//! The durable payment-timeout sweeper: a database query, never an in-memory timer. Every
//! replica runs it; `FOR UPDATE SKIP LOCKED` hands each expired order to exactly one of them.
//! The cancellation is the payments flow's ([`Payments::cancel_expired`]): a cancelled order
//! publishes `OrderCancelled` (marketing gives seckill stock back and frees the buyer's slot; a
//! voucher it used is released) and its product stock is back in the same transaction; its
//! checkout is then expired at the provider, best effort.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use crate::payments::Payments;

/// Orders cancelled per transaction.
const BATCH: i64 = 100;

/// The sweeper.
pub struct Sweeper {
    payments: Payments,
    interval: Duration,
    cancelled: Counter,
}

impl Sweeper {
    /// Sweeps every `interval` through `payments`, counting cancelled orders in `cancelled`.
    pub fn new(payments: Payments, interval: Duration, cancelled: Counter) -> Self {
        Self {
            payments,
            interval,
            cancelled,
        }
    }

    /// One pass: cancels expired orders until none is left; returns how many.
    pub async fn sweep(&self) -> usize {
        let mut total = 0;
        loop {
            match self.payments.cancel_expired(BATCH).await {
                Ok(cancelled) => {
                    let n = cancelled.len();
                    total += n;
                    self.cancelled.inc_by(n as u64);
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

    /// Runs until `shutdown` is cancelled; each round also retries the refunds of payments that
    /// arrived after their order was cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.sweep().await;
            if let Err(err) = self.payments.refund_late_payments(BATCH).await {
                tracing::warn!(error = %err, "listing late payments failed");
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

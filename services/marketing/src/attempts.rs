//! The seckill attempt flow: one user's try at one voucher of a campaign.
//!
//! The flow runs the reservation script, which decides everything atomically in one Redis
//! round trip (the user's attempt rate at the campaign, window, per-user limit, stock) and, on
//! success, adds the reservation to the campaign's stream for ordering. Nothing is written anywhere else, so a
//! refusal leaves no trace but its metric. The script is the one atomic step: whatever must be
//! remembered with a reservation goes into it, such as the request's `Idempotency-Key` record
//! (caller + key → order id): a retry with the key gets the same reservation back, even when the
//! process died before the kit's idempotency middleware stored the first answer.
//!
//! When Redis does not know the campaign, the campaign upkeep job is woken up: if Redis lost
//! its data, the campaign is rebuilt from its durable sales at once instead of at the next tick.

use std::sync::Arc;

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain;
use crate::seckill::{Attempt, Seckill};

/// Labels of the seckill outcome counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `reserved`, `replayed`, `sold_out`, `already_bought`, `not_started`, `ended`, `unknown`,
    /// `unavailable`, `rate_limited`.
    pub outcome: &'static str,
}

/// Why an attempt got no voucher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The user tries more often than the country allows.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    RateLimited {
        /// When to try again.
        retry_after_secs: u64,
    },
    /// No such campaign.
    #[error("campaign `{0}` does not exist")]
    UnknownCampaign(String),
    /// Before the start.
    #[error("not started")]
    NotStarted,
    /// After the end, or closed.
    #[error("ended")]
    Ended,
    /// The user holds as many as one person may.
    #[error("already bought")]
    AlreadyBought,
    /// Nothing left.
    #[error("sold out")]
    SoldOut,
    /// Redis did not answer: nothing was reserved.
    #[error("the seckill store is unreachable")]
    Unavailable,
}

impl Refusal {
    fn outcome(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::UnknownCampaign(_) => "unknown",
            Self::NotStarted => "not_started",
            Self::Ended => "ended",
            Self::AlreadyBought => "already_bought",
            Self::SoldOut => "sold_out",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Every outcome `pulse_marketing_seckill_attempts_total` counts.
const OUTCOMES: [&str; 9] = [
    "reserved",
    "replayed",
    "rate_limited",
    "unknown",
    "not_started",
    "ended",
    "already_bought",
    "sold_out",
    "unavailable",
];

/// A won attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The order ordering will create from the reservation.
    pub order_id: Uuid,
    /// The request's `Idempotency-Key` had reserved it already: this is that answer again.
    pub replayed: bool,
}

/// The seckill attempt flow.
#[derive(Clone)]
pub struct Attempts {
    seckill: Arc<Seckill>,
    outcomes: Family<OutcomeLabels, Counter>,
    missing: Arc<Notify>,
}

impl Attempts {
    /// Attempts over `seckill` (which limits each user's attempt rate), counted in `outcomes`;
    /// `missing` is notified when Redis does not know a campaign.
    pub fn new(
        seckill: Arc<Seckill>,
        outcomes: Family<OutcomeLabels, Counter>,
        missing: Arc<Notify>,
    ) -> Self {
        // Every outcome's series exists (at 0) from the start.
        pulse_kit::metrics::preset(&outcomes, OUTCOMES.map(|outcome| OutcomeLabels { outcome }));
        Self {
            seckill,
            outcomes,
            missing,
        }
    }

    /// One attempt by `user` at `campaign`, with the request's `Idempotency-Key` if it has one.
    #[tracing::instrument(skip(self), fields(order = tracing::field::Empty))]
    pub async fn attempt(
        &self,
        campaign: &str,
        user: &str,
        key: Option<&str>,
    ) -> Result<Reserved, Refusal> {
        let result = self.decide(campaign, user, key).await;
        let outcome = match &result {
            Ok(reserved) => {
                tracing::Span::current()
                    .record("order", tracing::field::display(reserved.order_id));
                if reserved.replayed {
                    "replayed"
                } else {
                    "reserved"
                }
            }
            Err(refusal) => refusal.outcome(),
        };
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        result
    }

    async fn decide(
        &self,
        campaign: &str,
        user: &str,
        key: Option<&str>,
    ) -> Result<Reserved, Refusal> {
        if domain::check_campaign_id(campaign).is_err() {
            return Err(Refusal::UnknownCampaign(campaign.to_owned()));
        }
        let order_id = pulse_kit::new_id();
        match self
            .seckill
            .reserve_once(campaign, user, order_id, key, Utc::now())
            .await
        {
            Ok(Attempt::Reserved) => Ok(Reserved {
                order_id,
                replayed: false,
            }),
            Ok(Attempt::Replayed(order_id)) => Ok(Reserved {
                order_id,
                replayed: true,
            }),
            Ok(Attempt::RateLimited(retry_after_ms)) => Err(Refusal::RateLimited {
                retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
            }),
            Ok(Attempt::SoldOut) => Err(Refusal::SoldOut),
            Ok(Attempt::AlreadyBought) => Err(Refusal::AlreadyBought),
            Ok(Attempt::NotStarted) => Err(Refusal::NotStarted),
            Ok(Attempt::Ended) => Err(Refusal::Ended),
            Ok(Attempt::Unknown) => {
                self.missing.notify_one();
                Err(Refusal::UnknownCampaign(campaign.to_owned()))
            }
            Err(err) => {
                tracing::warn!(error = %err, "seckill refused: Redis unavailable");
                Err(Refusal::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_counted_has_its_series_from_the_start() {
        let refusals = [
            Refusal::RateLimited {
                retry_after_secs: 1,
            },
            Refusal::UnknownCampaign("c".into()),
            Refusal::NotStarted,
            Refusal::Ended,
            Refusal::AlreadyBought,
            Refusal::SoldOut,
            Refusal::Unavailable,
        ];
        for refusal in &refusals {
            assert!(OUTCOMES.contains(&refusal.outcome()), "{refusal:?}");
        }
        // The two wins, and nothing else.
        assert_eq!(OUTCOMES.len(), refusals.len() + 2);
        assert!(OUTCOMES.contains(&"reserved") && OUTCOMES.contains(&"replayed"));
    }
}

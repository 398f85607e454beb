//! Campaign timing: when the `SeckillCampaign` reconciler ([`crate::campaign_controller`]) looks
//! at a campaign again. Only the sale window and the poll interval count here; the phase a
//! campaign is in is `marketing`'s to say.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use pulse_proto::marketing::v1 as pb;

use crate::crd::SeckillCampaignSpec;

/// How soon to look again when `marketing` has not yet seen a start or end the operator's
/// clock has passed (clock skew between nodes).
pub const SKEW_RETRY: Duration = Duration::from_secs(1);

/// When to reconcile a campaign again, seen from `now`:
/// - before `startsAt`: exactly at `startsAt`, so it opens on time;
/// - during the sale: every `poll` to mirror sales, and never later than `endsAt`;
/// - after `endsAt`: never (`None`); only a change of the object brings it back.
pub fn requeue_after(
    spec: &SeckillCampaignSpec,
    now: DateTime<Utc>,
    poll: Duration,
) -> Option<Duration> {
    let until = |at: DateTime<Utc>| (at - now).to_std().unwrap_or(Duration::ZERO);
    if now < spec.starts_at {
        Some(until(spec.starts_at))
    } else if now < spec.ends_at {
        Some(until(spec.ends_at).min(poll))
    } else {
        None
    }
}

/// When to look at a campaign again after a successful pass at `now`, given what `marketing`
/// answered: as [`requeue_after`] says, never once `marketing` closed it, and soon when
/// `marketing` still reports a phase whose end the operator's clock has passed (it is still
/// `Scheduled` after `startsAt`, or open after `endsAt`).
pub fn next_action(
    spec: &SeckillCampaignSpec,
    marketing: &pb::CampaignStatus,
    now: DateTime<Utc>,
    poll: Duration,
) -> Action {
    if marketing.closed {
        return Action::await_change();
    }
    let lagging = match marketing.phase() {
        pb::CampaignPhase::Scheduled => now >= spec.starts_at,
        pb::CampaignPhase::Active | pb::CampaignPhase::SoldOut => now >= spec.ends_at,
        pb::CampaignPhase::Ended | pb::CampaignPhase::Unspecified => false,
    };
    if lagging {
        return Action::requeue(SKEW_RETRY.min(poll));
    }
    match requeue_after(spec, now, poll) {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::VoucherSpec;
    use chrono::TimeZone;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, hour, minute, 0)
            .single()
            .expect("valid time")
    }

    fn spec() -> SeckillCampaignSpec {
        SeckillCampaignSpec {
            voucher: VoucherSpec {
                title: "10 EUR off".into(),
                value: 1000,
            },
            price: 100,
            stock: 50,
            per_user_limit: 1,
            starts_at: at(9, 0),
            ends_at: at(10, 0),
        }
    }

    #[test]
    fn requeues_at_start_then_polls_until_the_end() {
        let s = spec();
        let poll = Duration::from_secs(30);
        assert_eq!(
            requeue_after(&s, at(8, 0), poll),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(requeue_after(&s, at(9, 0), poll), Some(poll));
        // Close to the end the requeue lands exactly on endsAt.
        let near_end = at(10, 0) - chrono::Duration::seconds(10);
        assert_eq!(
            requeue_after(&s, near_end, poll),
            Some(Duration::from_secs(10))
        );
        assert_eq!(requeue_after(&s, at(10, 0), poll), None);
    }
}

//! Campaign timing: the pure rules the `SeckillCampaign` reconciler
//! ([`crate::campaign_controller`]) follows to decide the phase and when to look again.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::crd::{CampaignPhase, SeckillCampaignSpec};

/// The phase of a campaign at `now`. `remaining` is the stock left as `marketing` reports it
/// (unknown before the first sync); an open campaign with nothing left is `SoldOut`.
pub fn phase_at(
    spec: &SeckillCampaignSpec,
    now: DateTime<Utc>,
    remaining: Option<i64>,
) -> CampaignPhase {
    if now < spec.starts_at {
        CampaignPhase::Scheduled
    } else if now >= spec.ends_at {
        CampaignPhase::Ended
    } else if remaining.is_some_and(|left| left <= 0) {
        CampaignPhase::SoldOut
    } else {
        CampaignPhase::Active
    }
}

/// When to reconcile a campaign again, seen from `now`:
/// - scheduled: exactly at `startsAt`, so it opens on time;
/// - open (active or sold out): every `poll` to mirror sales, and never later than `endsAt`;
/// - ended: never (`None`); only a change of the object brings it back.
pub fn requeue_after(
    spec: &SeckillCampaignSpec,
    now: DateTime<Utc>,
    poll: Duration,
) -> Option<Duration> {
    let until = |at: DateTime<Utc>| (at - now).to_std().unwrap_or(Duration::ZERO);
    match phase_at(spec, now, None) {
        CampaignPhase::Scheduled => Some(until(spec.starts_at)),
        CampaignPhase::Active | CampaignPhase::SoldOut => Some(until(spec.ends_at).min(poll)),
        CampaignPhase::Ended => None,
    }
}

/// Sold and remaining vouchers from the stock and what `marketing` reports as sold, clamped
/// so the status never shows negative numbers or more sold than stocked.
pub fn sales(stock: i64, sold: i64) -> (i64, i64) {
    let sold = sold.clamp(0, stock.max(0));
    (sold, stock.max(0) - sold)
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
    fn phase_follows_the_clock_and_the_stock() {
        let s = spec();
        assert_eq!(phase_at(&s, at(8, 59), None), CampaignPhase::Scheduled);
        assert_eq!(phase_at(&s, at(9, 0), None), CampaignPhase::Active);
        assert_eq!(phase_at(&s, at(9, 30), Some(3)), CampaignPhase::Active);
        assert_eq!(phase_at(&s, at(9, 30), Some(0)), CampaignPhase::SoldOut);
        assert_eq!(phase_at(&s, at(10, 0), Some(3)), CampaignPhase::Ended);
        assert_eq!(phase_at(&s, at(11, 0), Some(0)), CampaignPhase::Ended);
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

    #[test]
    fn sales_are_clamped() {
        assert_eq!(sales(50, 20), (20, 30));
        assert_eq!(sales(50, 70), (50, 0));
        assert_eq!(sales(50, -1), (0, 50));
        assert_eq!(sales(0, 0), (0, 0));
    }
}

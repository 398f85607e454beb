//! What polling an order id that has no order answers (`GET /v1/orders/{id}`).
//!
//! A seckill buyer gets an order id with the `202` of their reservation and polls it until the
//! reservation consumer has made the order. If Redis lost the reservation before that (its data
//! was lost between the `202` and the consumer), the order never comes; marketing rebuilds its
//! counters from the orders that exist, so the buyer may buy again. Rather than a 404 forever,
//! an id old enough answers 410 `reservation-lost`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use pulse_kit::problem::Problem;
use uuid::Uuid;

/// An unknown order id (UUIDv7) older than this is not coming: its seckill reservation was
/// lost before it became an order. A reservation normally becomes an order within milliseconds;
/// a consumer that dies holding it hands it on after its claim idle time (30 s by default), and
/// a claimed entry may fail a few times before it succeeds. Two minutes is four default claim
/// idle times: past it, the buyer is told to buy again rather than left polling a 404 forever.
pub const RESERVATION_LOST_AFTER: Duration = Duration::from_secs(120);

/// How long ago the UUIDv7 `id` was made; `None` for other versions (or a time ahead of ours).
fn age_of(id: Uuid, now: SystemTime) -> Option<Duration> {
    if id.get_version() != Some(uuid::Version::SortRand) {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    now.duration_since(UNIX_EPOCH + Duration::new(secs, nanos))
        .ok()
}

/// The answer for an order id the caller has no order under: 410 `reservation-lost` once the
/// id is older than [`RESERVATION_LOST_AFTER`], else 404 `order-not-found` (a seckill order may
/// still be on its way).
pub(super) fn unknown_order(id: Uuid) -> Problem {
    if age_of(id, SystemTime::now()).is_some_and(|age| age > RESERVATION_LOST_AFTER) {
        return Problem::new(StatusCode::GONE, "reservation-lost", "Reservation lost")
            .with_detail(format!(
                "there is no order {id}: your reservation was lost before it became an order; nothing was charged; you may buy again"
            ));
    }
    Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found").with_detail(format!(
        "order {id} does not exist; a seckill order may still be being created: poll again in a moment"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v7_made(ago: Duration) -> Uuid {
        let at = SystemTime::now() - ago;
        let since = at.duration_since(UNIX_EPOCH).expect("after 1970");
        Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            since.as_secs(),
            since.subsec_nanos(),
        ))
    }

    #[test]
    fn only_old_v7_ids_count_as_lost() {
        let now = SystemTime::now();
        let young = v7_made(Duration::from_secs(5));
        let old = v7_made(RESERVATION_LOST_AFTER + Duration::from_secs(5));
        assert!(age_of(young, now).is_some_and(|age| age < RESERVATION_LOST_AFTER));
        assert!(age_of(old, now).is_some_and(|age| age > RESERVATION_LOST_AFTER));
        assert_eq!(age_of(Uuid::new_v4(), now), None, "no time in a v4 id");
        let ahead = v7_made(Duration::ZERO);
        assert_eq!(
            age_of(ahead, now - Duration::from_secs(60)),
            None,
            "a time ahead of ours"
        );
    }
}

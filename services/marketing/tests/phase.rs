//! The campaign phase rule exists once, in `domain::phase`; the reservation script decides the
//! same thing in Lua inside Redis. This test runs the real script over every kind of moment and
//! state and checks that both agree.

use chrono::{Duration, Utc};
use pulse_kit::redis::RedisHandle;
use pulse_kit::testing::{redis_url, unique};
use pulse_marketing::domain::{Phase, phase};
use pulse_marketing::seckill::{Attempt, LoadSpec, Seckill};

#[tokio::test]
async fn the_reservation_script_agrees_with_the_phase_rule() {
    let redis = RedisHandle::new(&redis_url()).expect("redis url");
    let seckill = Seckill::new(redis, &unique("phase"));
    let now = Utc::now();
    let hour = Duration::hours(1);
    // (start, end) around `now`: before the start, at the start, inside, at the end, after.
    let windows = [
        (now + hour, now + hour * 2),
        (now, now + hour),
        (now - hour, now + hour),
        (now - hour, now),
        (now - hour * 2, now - hour),
    ];
    let mut checked = 0;
    for (w, (starts_at, ends_at)) in windows.into_iter().enumerate() {
        for closed in [false, true] {
            for stock in [0u32, 3] {
                let id = format!("c{w}-{closed}-{stock}");
                seckill
                    .load(&LoadSpec {
                        id: &id,
                        stock,
                        starts_at,
                        ends_at,
                        closed,
                        per_user_limit: 1,
                        price_minor: 100,
                        currency: "EUR",
                    })
                    .await
                    .expect("load");
                let attempt = seckill
                    .reserve(&id, "buyer", pulse_kit::new_id(), now)
                    .await
                    .expect("reserve");
                let script_says = match attempt {
                    Attempt::NotStarted => Phase::Scheduled,
                    Attempt::Ended => Phase::Ended,
                    Attempt::SoldOut => Phase::SoldOut,
                    Attempt::Reserved => Phase::Active,
                    other => panic!("{id}: unexpected {other:?} for a fresh buyer"),
                };
                let rule_says = phase(starts_at, ends_at, closed, stock, now);
                assert_eq!(
                    script_says, rule_says,
                    "{id}: the Lua script and domain::phase disagree"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 20);
}

//! Redis helpers against a real Redis.

use std::time::Duration;

use pulse_kit::redis::{LuaScript, OwnedLock, RedisHandle, RedisLock};
use pulse_kit::testing::{redis_url, unique};

#[tokio::test]
async fn scripts_survive_a_script_flush() {
    let redis = RedisHandle::new(&redis_url()).expect("url");
    let mut conn = redis.connection().await.expect("connect");
    let script = LuaScript::new("return tonumber(ARGV[1]) + 1");
    let first: i64 = script.run(&mut conn, &[], &["41"]).await.expect("run");
    assert_eq!(first, 42);
    // Redis forgets every script (as after a restart): the next call answers NOSCRIPT and
    // the helper loads the script again.
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .expect("flush");
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(script.sha())
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(exists, vec![false]);
    let again: i64 = script.run(&mut conn, &[], &["1"]).await.expect("reloaded");
    assert_eq!(again, 2);
}

#[tokio::test]
async fn a_lock_has_one_owner_expires_and_is_released_only_by_its_owner() {
    let redis = RedisHandle::new(&redis_url()).expect("url");
    let mut conn = redis.connection().await.expect("connect");
    let locks = RedisLock::new();
    let key = unique("{kit}:lock");

    let mut handles = Vec::new();
    for _ in 0..50 {
        let redis = redis.clone();
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            let mut conn = redis.connection().await.expect("connect");
            RedisLock::new()
                .try_acquire(&mut conn, &key, Duration::from_secs(5))
                .await
                .expect("acquire")
        }));
    }
    let mut winners = Vec::new();
    for handle in handles {
        if let Some(guard) = handle.await.expect("task") {
            winners.push(guard);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 50 racers holds the lock");
    let guard = winners.remove(0);

    let impostor = pulse_kit::redis::LockGuard {
        key: key.clone(),
        token: "not-the-owner".into(),
        reentered: false,
    };
    assert!(
        !locks.release(&mut conn, &impostor).await.expect("release"),
        "a stranger cannot release it"
    );
    assert!(
        locks
            .try_acquire(&mut conn, &key, Duration::from_secs(5))
            .await
            .expect("try")
            .is_none()
    );
    assert!(locks.release(&mut conn, &guard).await.expect("release"));
    let short = locks
        .try_acquire(&mut conn, &key, Duration::from_millis(100))
        .await
        .expect("try")
        .expect("free again");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let next = locks
        .try_acquire(&mut conn, &key, Duration::from_secs(1))
        .await
        .expect("try");
    assert!(next.is_some(), "an expired lock can be taken");
    assert!(
        !locks.release(&mut conn, &short).await.expect("release"),
        "the expired owner no longer owns it"
    );
}

#[tokio::test]
async fn an_owned_lock_is_taken_back_by_its_owner_only() {
    let redis = RedisHandle::new(&redis_url()).expect("url");
    let mut conn = redis.connection().await.expect("connect");
    let locks = RedisLock::new();
    let key = pulse_kit::testing::unique("lock-as");
    let ttl = Duration::from_secs(5);
    let OwnedLock::Taken(first) = locks
        .try_acquire_as(&mut conn, &key, "owner-a", ttl)
        .await
        .expect("redis")
    else {
        panic!("free lock not taken");
    };
    // The same owner (a retry whose first attempt died holding it) takes it again.
    let again = locks
        .try_acquire_as(&mut conn, &key, "owner-a", ttl)
        .await
        .expect("redis");
    assert!(!first.reentered, "it was free");
    assert_eq!(
        again,
        OwnedLock::Taken(pulse_kit::redis::LockGuard {
            reentered: true,
            ..first.clone()
        }),
        "taken again, and it says its owner held it"
    );
    // Anyone else is refused, with or without an owner name, and told who holds it.
    assert_eq!(
        locks
            .try_acquire_as(&mut conn, &key, "owner-b", ttl)
            .await
            .expect("redis"),
        OwnedLock::HeldBy("owner-a".into())
    );
    assert!(
        locks
            .try_acquire(&mut conn, &key, ttl)
            .await
            .expect("redis")
            .is_none()
    );
    assert!(locks.release(&mut conn, &first).await.expect("redis"));
    assert!(matches!(
        locks
            .try_acquire_as(&mut conn, &key, "owner-b", ttl)
            .await
            .expect("redis"),
        OwnedLock::Taken(_)
    ));
}

//! Single-flight: concurrent callers asking for the same key share one computation, so a cold
//! cache key costs one database query however many requests arrive at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Flight<V> = Shared<BoxFuture<'static, V>>;

/// Deduplicates in-flight computations by key. `V` is the computation's whole outcome (for a
/// fallible one, a `Result` with a cloneable error), handed to every caller that waited for it.
pub struct SingleFlight<V> {
    flights: Mutex<HashMap<String, Flight<V>>>,
}

impl<V> Default for SingleFlight<V> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> SingleFlight<V> {
    /// Runs `compute` for `key` unless a computation for it is already running, in which case
    /// waits for that one and gets (a clone of) its outcome.
    pub async fn run<F, Fut>(&self, key: &str, compute: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (flight, leader) = {
            let mut flights = self.lock();
            match flights.get(key) {
                Some(flight) => (flight.clone(), None),
                None => {
                    let flight = compute().boxed().shared();
                    flights.insert(key.to_owned(), flight.clone());
                    (flight, Some(Leader { flights: self, key }))
                }
            }
        };
        let result = flight.await;
        // The leader's guard retires the flight when the leader finishes or is cancelled (its
        // caller went away): either way the next caller starts afresh instead of joining a
        // flight nobody polls, or a finished one forever.
        drop(leader);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight<V>>> {
        match self.flights.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Held by the caller that started a flight; removes the flight when dropped.
struct Leader<'a, V: Clone + Send + Sync + 'static> {
    flights: &'a SingleFlight<V>,
    key: &'a str,
}

impl<V: Clone + Send + Sync + 'static> Drop for Leader<'_, V> {
    fn drop(&mut self) {
        self.flights.lock().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_computation() {
        let flights = Arc::new(SingleFlight::<Result<usize, Arc<str>>>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let flights = Arc::clone(&flights);
            let runs = Arc::clone(&runs);
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task"), Ok(1));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once finished, the next call computes again.
        let again = flights.run("k", || async { Ok(7) }).await;
        assert_eq!(again, Ok(7));
        // A failure is shared too, with its type.
        let failed = flights.run("k", || async { Err(Arc::from("down")) }).await;
        assert_eq!(failed, Err(Arc::from("down")));
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_leave_its_flight_behind() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let started = Arc::new(tokio::sync::Notify::new());
        let leader = tokio::spawn({
            let flights = Arc::clone(&flights);
            let started = Arc::clone(&started);
            async move {
                flights
                    .run("k", || async move {
                        started.notify_one();
                        std::future::pending::<u32>().await
                    })
                    .await
            }
        });
        started.notified().await;
        leader.abort();
        let _ = leader.await;
        // The next caller computes afresh instead of waiting on the abandoned flight.
        let next =
            tokio::time::timeout(Duration::from_secs(1), flights.run("k", || async { 2 })).await;
        assert_eq!(next, Ok(2));
    }
}

//! A small circuit breaker for calls to another service.
//!
//! - **Closed**: calls go through; `failure_threshold` failures in a row open the circuit.
//! - **Open**: calls are refused at once ([`CircuitOpen`]) for `open_for`, so a caller answers
//!   fast instead of waiting on a dependency that is down.
//! - **Half-open**: after `open_for`, up to `half_open_trials` calls are let through; a success
//!   closes the circuit, a failure opens it again for another `open_for`.
//!
//! The caller decides what counts as a failure (a transport error or a timeout is; a "not found"
//! answer is not). The breaker holds no timer: state changes happen when calls are made.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tuning of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit (at least 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before trial calls are allowed.
    pub open_for: Duration,
    /// Calls allowed at once while half-open (at least 1).
    pub half_open_trials: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            half_open_trials: 1,
        }
    }
}

/// The state a breaker is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// A few trial calls go through.
    HalfOpen,
}

/// The call was refused because the circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: the dependency keeps failing; next trial in {retry_in:?}")]
pub struct CircuitOpen {
    /// When a trial call will be allowed again.
    pub retry_in: Duration,
}

/// What [`CircuitBreaker::call`] returns on error.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// Refused without calling.
    #[error(transparent)]
    Open(#[from] CircuitOpen),
    /// The call was made and failed.
    #[error(transparent)]
    Inner(E),
}

#[derive(Debug)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32 },
}

/// A circuit breaker shared by all callers of one dependency.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Mutex<Phase>,
}

/// Permission to make one call; report how it went with [`Attempt::success`] or
/// [`Attempt::failure`]. Dropping it without a report (the caller gave up) changes nothing but
/// frees its half-open trial slot.
#[derive(Debug)]
#[must_use = "report the outcome with success() or failure()"]
pub struct Attempt<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    reported: bool,
}

impl Attempt<'_> {
    /// The call succeeded.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.on_success(self.trial);
    }

    /// The call failed in a way that counts against the dependency.
    pub fn failure(self) {
        self.failure_at(Instant::now());
    }

    fn failure_at(mut self, now: Instant) {
        self.reported = true;
        self.breaker.on_failure(self.trial, now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.reported && self.trial {
            self.breaker.release_trial();
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            half_open_trials: config.half_open_trials.max(1),
            ..config
        };
        Self {
            config,
            phase: Mutex::new(Phase::Closed { failures: 0 }),
        }
    }

    /// Its tuning.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        // A poisoned lock only means a panic elsewhere; the phase itself is always consistent.
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current state (an open breaker whose time is up reports half-open).
    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    fn state_at(&self, now: Instant) -> BreakerState {
        match *self.lock() {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call: an [`Attempt`] to report on, or [`CircuitOpen`] at once.
    pub fn try_acquire(&self) -> Result<Attempt<'_>, CircuitOpen> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<Attempt<'_>, CircuitOpen> {
        let mut phase = self.lock();
        let trial = match *phase {
            Phase::Closed { .. } => false,
            Phase::Open { until } if now < until => {
                return Err(CircuitOpen {
                    retry_in: until - now,
                });
            }
            Phase::Open { .. } => {
                *phase = Phase::HalfOpen { in_flight: 1 };
                true
            }
            Phase::HalfOpen { ref mut in_flight } => {
                if *in_flight >= self.config.half_open_trials {
                    return Err(CircuitOpen {
                        retry_in: Duration::ZERO,
                    });
                }
                *in_flight += 1;
                true
            }
        };
        Ok(Attempt {
            breaker: self,
            trial,
            reported: false,
        })
    }

    fn on_success(&self, _trial: bool) {
        *self.lock() = Phase::Closed { failures: 0 };
    }

    fn on_failure(&self, trial: bool, now: Instant) {
        let mut phase = self.lock();
        let open = Phase::Open {
            until: now + self.config.open_for,
        };
        match *phase {
            Phase::Closed { failures } => {
                let failures = failures + 1;
                *phase = if failures >= self.config.failure_threshold {
                    tracing::warn!(failures, "circuit breaker opened");
                    open
                } else {
                    Phase::Closed { failures }
                };
            }
            Phase::HalfOpen { .. } => {
                tracing::warn!("circuit breaker trial failed; open again");
                *phase = open;
            }
            // A call admitted before the circuit opened failed too: extend nothing.
            Phase::Open { .. } => {
                if trial {
                    *phase = open;
                }
            }
        }
    }

    /// Opens the circuit now for a full `open_for`, whatever the failure count: for a failure
    /// that is certain on its own (a refused connection, say).
    pub fn trip(&self) {
        let mut phase = self.lock();
        if !matches!(*phase, Phase::Open { .. }) {
            tracing::warn!("circuit breaker opened");
        }
        *phase = Phase::Open {
            until: Instant::now() + self.config.open_for,
        };
    }

    fn release_trial(&self) {
        let mut phase = self.lock();
        if let Phase::HalfOpen { ref mut in_flight } = *phase {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Runs `call` through the breaker; `is_failure` says which errors count against the
    /// dependency (the others are passed through as [`BreakerError::Inner`] without tripping).
    pub async fn call<T, E, F, Fut>(
        &self,
        is_failure: impl Fn(&E) -> bool,
        call: F,
    ) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let attempt = self.try_acquire()?;
        match call().await {
            Ok(value) => {
                attempt.success();
                Ok(value)
            }
            Err(err) => {
                if is_failure(&err) {
                    attempt.failure();
                } else {
                    attempt.success();
                }
                Err(BreakerError::Inner(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_ms: u64, trials: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_millis(open_ms),
            half_open_trials: trials,
        })
    }

    fn fail_at(b: &CircuitBreaker, now: Instant) {
        b.try_acquire_at(now).expect("admitted").failure_at(now);
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 1000, 1);
        let now = Instant::now();
        fail_at(&b, now);
        fail_at(&b, now);
        // A success in between resets the count.
        b.try_acquire_at(now).expect("closed").success();
        fail_at(&b, now);
        fail_at(&b, now);
        assert_eq!(b.state_at(now), BreakerState::Closed);
        fail_at(&b, now);
        assert_eq!(b.state_at(now), BreakerState::Open);
        let refused = b.try_acquire_at(now).expect_err("open");
        assert_eq!(refused.retry_in, Duration::from_millis(1000));
    }

    #[test]
    fn half_open_admits_limited_trials_and_a_success_closes() {
        let b = breaker(1, 100, 1);
        let start = Instant::now();
        fail_at(&b, start);
        let later = start + Duration::from_millis(150);
        assert_eq!(b.state_at(later), BreakerState::HalfOpen);
        let trial = b.try_acquire_at(later).expect("trial");
        assert!(trial.trial);
        // Only one trial at a time.
        assert!(b.try_acquire_at(later).is_err());
        trial.success();
        assert_eq!(b.state_at(later), BreakerState::Closed);
        assert!(b.try_acquire_at(later).is_ok());
    }

    #[test]
    fn a_failed_trial_opens_again_for_a_full_period() {
        let b = breaker(2, 100, 1);
        let start = Instant::now();
        fail_at(&b, start);
        fail_at(&b, start);
        let later = start + Duration::from_millis(120);
        fail_at(&b, later);
        assert_eq!(b.state_at(later), BreakerState::Open);
        assert_eq!(
            b.try_acquire_at(later + Duration::from_millis(50))
                .expect_err("open")
                .retry_in,
            Duration::from_millis(50)
        );
        assert!(b.try_acquire_at(later + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn an_abandoned_trial_frees_its_slot() {
        let b = breaker(1, 10, 1);
        let start = Instant::now();
        fail_at(&b, start);
        let later = start + Duration::from_millis(20);
        drop(b.try_acquire_at(later).expect("trial"));
        assert!(b.try_acquire_at(later).is_ok(), "slot freed");
    }

    #[tokio::test]
    async fn call_counts_only_the_failures_the_caller_names() {
        let b = breaker(2, 60_000, 1);
        for _ in 0..5 {
            let result: Result<(), _> = b
                .call(|e: &&str| *e == "down", || async { Err("not found") })
                .await;
            assert!(matches!(result, Err(BreakerError::Inner("not found"))));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..2 {
            let _ = b
                .call(|e: &&str| *e == "down", || async { Err::<(), _>("down") })
                .await;
        }
        assert_eq!(b.state(), BreakerState::Open);
        let mut called = false;
        let result = b
            .call(
                |_: &&str| true,
                || {
                    called = true;
                    async { Ok::<_, &str>(()) }
                },
            )
            .await;
        assert!(matches!(result, Err(BreakerError::Open(_))));
        assert!(!called, "an open circuit does not call");
    }

    #[test]
    fn trip_opens_at_once_for_a_full_period() {
        let b = breaker(5, 60_000, 1);
        b.trip();
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.try_acquire().expect_err("open");
        assert!(refused.retry_in > Duration::from_secs(59));
    }

    #[test]
    fn zero_settings_are_raised_to_one() {
        let b = breaker(0, 10, 0);
        assert_eq!(b.config().failure_threshold, 1);
        assert_eq!(b.config().half_open_trials, 1);
    }
}

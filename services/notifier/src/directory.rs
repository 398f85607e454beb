//! Notifier's client of `identity.v1.Directory`: how to reach a recipient. Every call has a
//! deadline; a circuit breaker answers at once while identity keeps failing (deliveries then
//! wait and retry instead of piling up calls); answers are kept for a short while, so a burst
//! of messages to one user asks identity once. Contact data lives only in this cache, never in
//! notifier's tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_kit::breaker::{BreakerConfig, CircuitBreaker};
use pulse_proto::identity::v1 as pb;
use pulse_proto::identity::v1::directory_client::DirectoryClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How to reach one user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contact {
    /// E.164 phone number, if any.
    pub phone: Option<String>,
    /// Verified e-mail address, if any.
    pub email: Option<String>,
    /// Preferred language (BCP 47), if any.
    pub language: Option<String>,
    /// Name, if given.
    pub name: Option<String>,
}

/// Why identity gave no contact to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Identity did not answer in time or failed; retry later.
    #[error("identity's directory is unavailable: {0}")]
    Unavailable(String),
    /// The breaker is open: identity was not called.
    #[error("identity's directory keeps failing; calls are paused for {0:?}")]
    CircuitOpen(Duration),
}

/// A cached answer: the contact, or `None` for a user identity does not know.
type Entry = (Instant, Option<Contact>);

/// The client.
#[derive(Debug, Clone)]
pub struct Directory {
    client: DirectoryClient<Channel>,
    timeout: Duration,
    ttl: Duration,
    breaker: Arc<CircuitBreaker>,
    cache: Arc<Mutex<HashMap<String, Entry>>>,
}

/// Most users cached at once; past it, expired entries go, then everything.
const MAX_CACHED: usize = 50_000;

fn is_transient(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::NotFound | Code::InvalidArgument | Code::Ok
    )
}

fn non_empty(value: String) -> Option<String> {
    (!value.trim().is_empty()).then_some(value)
}

impl Directory {
    /// A client of `url` (`http://identity:50051`); connects lazily.
    pub fn new(
        url: &str,
        timeout: Duration,
        ttl: Duration,
        breaker: BreakerConfig,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = pulse_kit::grpc::lazy_channel(url, timeout)?;
        Ok(Self {
            client: DirectoryClient::new(channel),
            timeout,
            ttl,
            breaker: Arc::new(CircuitBreaker::new(breaker)),
            cache: Arc::default(),
        })
    }

    /// The breaker in front of identity (for metrics).
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// How to reach `user_id`: `Ok(None)` if identity knows no such user (an id that is not
    /// identity's, like a test subject), an error if identity cannot say now.
    pub async fn contact(&self, user_id: &str) -> Result<Option<Contact>, DirectoryError> {
        self.contact_with(user_id, |_| true).await
    }

    /// Like [`Directory::contact`], but a cached answer counts only if `usable` says so; else
    /// identity is asked again. A message about to be dropped for want of an address asks
    /// afresh, so an address verified a moment ago is not missed for the cache's lifetime.
    pub async fn contact_with(
        &self,
        user_id: &str,
        usable: impl Fn(Option<&Contact>) -> bool,
    ) -> Result<Option<Contact>, DirectoryError> {
        if let Some(hit) = self.cached(user_id)
            && usable(hit.as_ref())
        {
            return Ok(hit);
        }
        let attempt = self
            .breaker
            .try_acquire()
            .map_err(|open| DirectoryError::CircuitOpen(open.retry_in))?;
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(pb::GetContactRequest {
            user_id: user_id.to_owned(),
        });
        request.set_timeout(self.timeout);
        let answer = match client.get_contact(request).await {
            Ok(reply) => {
                attempt.success();
                let c = reply.into_inner();
                Some(Contact {
                    phone: non_empty(c.phone),
                    email: non_empty(c.email),
                    language: non_empty(c.language),
                    name: non_empty(c.name),
                })
            }
            Err(status) if !is_transient(&status) => {
                attempt.success();
                None
            }
            Err(status) => {
                attempt.failure();
                return Err(DirectoryError::Unavailable(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                )));
            }
        };
        self.remember(user_id, answer.clone());
        Ok(answer)
    }

    fn cached(&self, user_id: &str) -> Option<Option<Contact>> {
        if self.ttl.is_zero() {
            return None;
        }
        let cache = self.cache.lock().ok()?;
        let (at, contact) = cache.get(user_id)?;
        (at.elapsed() < self.ttl).then(|| contact.clone())
    }

    fn remember(&self, user_id: &str, contact: Option<Contact>) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= MAX_CACHED {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(user_id.to_owned(), (Instant::now(), contact));
    }
}

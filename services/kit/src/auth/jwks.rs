//! Identity's published keys: the JWK set (RFC 7517) every component verifies tokens with.
//!
//! Identity publishes the set at [`JWKS_PATH`] as a [`JwkSet`] — OKP/Ed25519 keys for EdDSA,
//! EC/P-256 keys for ES256, each with `kid` (its RFC 7638 [`thumbprint`]), `alg` and
//! `use: "sig"`; [`ed25519_jwk`] and [`p256_jwk`] build such keys, and [`usable_algorithm`] is
//! the check a verifier makes on each of them, so identity can prove its set is accepted.
//!
//! [`Jwks`] is the verifier's side: it fetches the set over HTTP, caches it, and refreshes it
//! when it is older than the response's `Cache-Control: max-age` (300 s without one) or when
//! a token names a `kid` the cache does not hold. Refreshes are single-flight (concurrent
//! requests share one fetch) and at most one starts per refresh interval
//! (`PULSE_JWKS_REFRESH_SECONDS`), whatever causes it, so a flood of tokens with made-up `kid`s
//! costs identity one request per interval. A refresh that fails keeps the cached keys (a
//! short identity outage logs nobody out); with nothing cached, tokens are answered 503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, KeyAlgorithm, KeyOperations, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse,
};
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

use super::{Algorithm, AuthError, algorithm_name};
use crate::singleflight::SingleFlight;

/// Where identity serves its JWK set.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How long a fetched set is fresh when its response has no `Cache-Control: max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// The longest a `max-age` is honoured: a set is re-fetched at least daily.
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A JWK set larger than this is refused (a few keys take about a kilobyte).
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Deadline of one fetch; identity answers from memory.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a JWK cannot be used to verify tokens, or has no thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// A member a Pulse verification key needs is missing or has another value.
    #[error("{0}")]
    Unusable(String),
}

fn unusable(message: impl Into<String>) -> JwkError {
    JwkError::Unusable(message.into())
}

/// The RFC 7638 thumbprint of a public JWK: the base64url (unpadded) SHA-256 of its required
/// members in lexicographic order, without white space. Pulse uses it as the key's `kid`.
pub fn thumbprint(jwk: &Jwk) -> Result<String, JwkError> {
    let canonical = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => {
            let curve = match ec.curve {
                EllipticCurve::P256 => "P-256",
                EllipticCurve::P384 => "P-384",
                EllipticCurve::P521 => "P-521",
                EllipticCurve::Ed25519 => return Err(unusable("an EC key on curve Ed25519")),
            };
            format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                json(curve),
                json(&ec.x),
                json(&ec.y)
            )
        }
        AlgorithmParameters::RSA(rsa) => {
            format!(
                r#"{{"e":{},"kty":"RSA","n":{}}}"#,
                json(&rsa.e),
                json(&rsa.n)
            )
        }
        AlgorithmParameters::OctetKey(oct) => {
            format!(r#"{{"k":{},"kty":"oct"}}"#, json(&oct.value))
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err(unusable("an OKP key on a curve other than Ed25519"));
            }
            format!(r#"{{"crv":"Ed25519","kty":"OKP","x":{}}}"#, json(&okp.x))
        }
    };
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// A JSON string literal of `value` (quoted and escaped).
fn json(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// The public JWK of an Ed25519 key (`EdDSA`): OKP, `use: "sig"`, `kid` its thumbprint.
pub fn ed25519_jwk(public_key: &[u8; 32]) -> Jwk {
    signing_jwk(
        KeyAlgorithm::EdDSA,
        AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(public_key),
        }),
    )
}

/// The public JWK of a P-256 key (`ES256`) from its affine coordinates (big-endian, as in the
/// uncompressed SEC1 point `04 ‖ x ‖ y`): EC, `use: "sig"`, `kid` its thumbprint.
pub fn p256_jwk(x: &[u8; 32], y: &[u8; 32]) -> Jwk {
    signing_jwk(
        KeyAlgorithm::ES256,
        AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        }),
    )
}

fn signing_jwk(algorithm: KeyAlgorithm, parameters: AlgorithmParameters) -> Jwk {
    let mut jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(algorithm),
            ..CommonParameters::default()
        },
        algorithm: parameters,
    };
    // Both shapes built here (EC on P-256, OKP on Ed25519) have a thumbprint.
    jwk.common.key_id = thumbprint(&jwk).ok();
    jwk
}

/// What a verifier checks on each published key before trusting it: a `kid`; `use` absent or
/// `sig` (and `key_ops`, if present, allowing `verify`); an `alg` of ES256 (EC, P-256), EdDSA
/// (OKP, Ed25519) or RS256 (RSA, at least 2048 bits) with well-formed key material. Symmetric
/// keys are never accepted from a JWKS. Returns the algorithm the key verifies.
pub fn usable_algorithm(jwk: &Jwk) -> Result<Algorithm, JwkError> {
    match jwk.common.key_id.as_deref() {
        Some(kid) if !kid.is_empty() => {}
        _ => return Err(unusable("the key has no `kid`")),
    }
    if let Some(key_use) = &jwk.common.public_key_use
        && *key_use != PublicKeyUse::Signature
    {
        return Err(unusable("the key's `use` is not `sig`"));
    }
    if let Some(operations) = &jwk.common.key_operations
        && !operations.contains(&KeyOperations::Verify)
    {
        return Err(unusable("the key's `key_ops` do not include `verify`"));
    }
    let Some(algorithm) = jwk.common.key_algorithm else {
        return Err(unusable("the key has no `alg`"));
    };
    match (algorithm, &jwk.algorithm) {
        (KeyAlgorithm::EdDSA, AlgorithmParameters::OctetKeyPair(okp))
            if okp.curve == EllipticCurve::Ed25519 =>
        {
            coordinate(&okp.x, "x", 32)?;
            Ok(Algorithm::EdDSA)
        }
        (KeyAlgorithm::ES256, AlgorithmParameters::EllipticCurve(ec))
            if ec.curve == EllipticCurve::P256 =>
        {
            coordinate(&ec.x, "x", 32)?;
            coordinate(&ec.y, "y", 32)?;
            Ok(Algorithm::ES256)
        }
        (KeyAlgorithm::RS256, AlgorithmParameters::RSA(rsa)) => {
            let modulus = decode(&rsa.n, "n")?;
            let exponent = decode(&rsa.e, "e")?;
            let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 || exponent.is_empty() {
                return Err(unusable(
                    "an RS256 key needs a modulus of at least 2048 bits",
                ));
            }
            Ok(Algorithm::RS256)
        }
        (other, _) => Err(unusable(format!(
            "`alg: {other}` with this key type is not a Pulse verification key (use EdDSA with OKP/Ed25519, ES256 with EC/P-256 or RS256 with RSA)"
        ))),
    }
}

fn decode(value: &str, member: &str) -> Result<Vec<u8>, JwkError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| unusable(format!("`{member}` is not base64url")))
}

fn coordinate(value: &str, member: &str, len: usize) -> Result<(), JwkError> {
    let bytes = decode(value, member)?;
    if bytes.len() == len {
        Ok(())
    } else {
        Err(unusable(format!(
            "`{member}` has {} bytes instead of {len}",
            bytes.len()
        )))
    }
}

/// A key of the cached set: what it verifies and how.
#[derive(Clone)]
pub(crate) struct PublishedKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) key: Arc<DecodingKey>,
}

/// Why no key could be found for a `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyLookupError {
    /// The set was fetched and does not hold it: the token is not the issuer's (401).
    Unknown,
    /// The set cannot be fetched right now and nothing usable is cached (503).
    Unavailable {
        /// When a new attempt may be made.
        retry_after: Duration,
    },
}

/// The outcome of a refresh, shared by every request that waited for it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refresh {
    /// The set was fetched and replaced the cache.
    Fetched,
    /// A refresh started less than the refresh interval ago: nothing was fetched.
    Throttled,
    /// The fetch failed; the cache (if any) stays.
    Failed(Arc<str>),
}

/// What the cache holds.
struct Cache {
    keys: HashMap<String, PublishedKey>,
    /// When the current set was fetched; `None` until the first success.
    fetched_at: Option<Instant>,
    /// How long it stays fresh.
    max_age: Duration,
    /// When the last refresh (successful or not) started.
    last_attempt: Option<Instant>,
    /// Whether the last refresh failed.
    last_failed: bool,
}

/// Identity's JWK set as a verifier sees it: fetched from a URL, cached, refreshed.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    refresh_interval: Duration,
    cache: RwLock<Cache>,
    flight: SingleFlight<Refresh>,
    fetches: Counter,
    failures: Counter,
    registered: AtomicBool,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("refresh_interval", &self.refresh_interval)
            .finish_non_exhaustive()
    }
}

/// The single-flight key of the one refresh in flight.
const REFRESH: &str = "jwks";

impl Jwks {
    /// The set at `url` (`http://identity.pulse-fr.svc:8080/.well-known/jwks.json`), refreshed
    /// at most once per `refresh_interval` (`PULSE_JWKS_REFRESH_SECONDS`). Nothing is fetched
    /// before the first token needs a key.
    pub fn new(url: &str, refresh_interval: Duration) -> Result<Self, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The keys come from the configured URL, nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| AuthError::Jwks(format!("cannot build the HTTP client: {err}")))?;
        Ok(Self {
            url: url.to_owned(),
            http,
            refresh_interval,
            cache: RwLock::new(Cache {
                keys: HashMap::new(),
                fetched_at: None,
                max_age: DEFAULT_MAX_AGE,
                last_attempt: None,
                last_failed: false,
            }),
            flight: SingleFlight::default(),
            fetches: Counter::default(),
            failures: Counter::default(),
            registered: AtomicBool::new(false),
        })
    }

    /// Where the set is fetched from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `kid`s of the cached set.
    pub fn cached_kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.read().keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Registers `pulse_jwks_fetches` and `pulse_jwks_fetch_failures` (once).
    pub fn register_metrics(&self, metrics: &crate::metrics::Metrics) {
        if self.registered.swap(true, Ordering::SeqCst) {
            return;
        }
        metrics.register(
            "jwks_fetches",
            "JWK sets fetched from identity",
            self.fetches.clone(),
        );
        metrics.register(
            "jwks_fetch_failures",
            "JWK set fetches that failed (the cached keys stay in use)",
            self.failures.clone(),
        );
    }

    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key `kid` names: from the cache when it holds it (refreshing a stale cache in the
    /// background), else after one refresh.
    pub(crate) async fn key(self: &Arc<Self>, kid: &str) -> Result<PublishedKey, KeyLookupError> {
        let (cached, refresh_due) = {
            let cache = self.read();
            let stale = cache
                .fetched_at
                .is_none_or(|at| at.elapsed() >= cache.max_age);
            (
                cache.keys.get(kid).cloned(),
                stale && self.may_start(&cache),
            )
        };
        if let Some(key) = cached {
            if refresh_due {
                // The token is checked with the cached key now; the next ones see the new set.
                drop(self.spawn_refresh());
            }
            return Ok(key);
        }
        let outcome = self.refresh().await;
        let cache = self.read();
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        if outcome == Refresh::Fetched || (cache.fetched_at.is_some() && !cache.last_failed) {
            return Err(KeyLookupError::Unknown);
        }
        // Nothing fetched yet, or identity did not answer the last time: the token may well
        // be signed by a key that set holds, so this is not the caller's fault.
        let waited = cache.last_attempt.map_or(Duration::ZERO, |at| at.elapsed());
        Err(KeyLookupError::Unavailable {
            retry_after: self.refresh_interval.saturating_sub(waited),
        })
    }

    /// Whether a refresh may start now (none started within the refresh interval).
    fn may_start(&self, cache: &Cache) -> bool {
        cache
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.refresh_interval)
    }

    /// Refreshes the set (or joins the refresh in flight) and waits for the outcome.
    async fn refresh(self: &Arc<Self>) -> Refresh {
        self.spawn_refresh().await.unwrap_or_else(|err| {
            Refresh::Failed(Arc::from(format!("the JWKS refresh task failed: {err}")))
        })
    }

    /// Runs the refresh in its own task, so a request that gives up waiting neither cancels
    /// it for the others nor leaves the single flight without its leader.
    fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<Refresh> {
        let jwks = Arc::clone(self);
        tokio::spawn(async move {
            let fetcher = Arc::clone(&jwks);
            jwks.flight
                .run(REFRESH, move || fetcher.fetch_if_allowed())
                .await
        })
    }

    /// Fetches the set unless a refresh started within the interval. The check is made here,
    /// inside the single flight, so a request that arrives just after a fetch finished does
    /// not start another.
    async fn fetch_if_allowed(self: Arc<Self>) -> Refresh {
        {
            let mut cache = self.write();
            if !self.may_start(&cache) {
                return Refresh::Throttled;
            }
            cache.last_attempt = Some(Instant::now());
        }
        let fetched = self.fetch().await;
        let mut cache = self.write();
        match fetched {
            Ok((keys, max_age)) => {
                self.fetches.inc();
                let mut kids: Vec<&String> = keys.keys().collect();
                kids.sort();
                tracing::info!(url = %self.url, kids = ?kids, max_age_secs = max_age.as_secs(),
                    "JWKS fetched");
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
                cache.max_age = max_age;
                cache.last_failed = false;
                Refresh::Fetched
            }
            Err(err) => {
                self.failures.inc();
                cache.last_failed = true;
                if cache.fetched_at.is_some() {
                    tracing::warn!(url = %self.url, error = %err, cached_keys = cache.keys.len(),
                        "JWKS refresh failed; the cached keys stay in use");
                } else {
                    tracing::warn!(url = %self.url, error = %err,
                        "JWKS fetch failed and no key is cached; tokens are answered 503");
                }
                Refresh::Failed(Arc::from(err))
            }
        }
    }

    /// One GET of the set: its usable keys and how long they are fresh.
    async fn fetch(&self) -> Result<(HashMap<String, PublishedKey>, Duration), String> {
        let mut response = self
            .http
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| format!("cannot reach {}: {err}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{} answered {status}", self.url));
        }
        let max_age = max_age(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| format!("reading {}: {err}", self.url))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!(
                    "{} sent more than {MAX_JWKS_BYTES} bytes",
                    self.url
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((parse_key_set(&body)?, max_age))
    }
}

/// The fresh lifetime a JWKS response asks for: `max-age` of `Cache-Control` (0 for
/// `no-cache`/`no-store`), [`DEFAULT_MAX_AGE`] without one, at most a day.
fn max_age(headers: &reqwest::header::HeaderMap) -> Duration {
    let mut max_age = None;
    for value in headers.get_all(reqwest::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Duration::ZERO;
            }
            if let Some(seconds) = lower.strip_prefix("max-age=")
                && let Ok(seconds) = seconds.trim_matches('"').parse::<u64>()
            {
                max_age = Some(Duration::from_secs(seconds));
            }
        }
    }
    max_age.unwrap_or(DEFAULT_MAX_AGE).min(MAX_MAX_AGE)
}

/// The usable keys of a JWK set document, by `kid`. A key that is not usable is skipped with
/// a warning (the others still serve); a document that is not a JWK set is an error.
fn parse_key_set(body: &[u8]) -> Result<HashMap<String, PublishedKey>, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet =
        serde_json::from_slice(body).map_err(|err| format!("not a JWK set: {err}"))?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let kid = value["kid"].as_str().unwrap_or_default().to_owned();
        let key = serde_json::from_value::<Jwk>(value)
            .map_err(|err| unusable(format!("not a JWK: {err}")))
            .and_then(|jwk| {
                let algorithm = usable_algorithm(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).map_err(|err| unusable(err.to_string()))?;
                Ok(PublishedKey {
                    algorithm,
                    key: Arc::new(key),
                })
            });
        match key {
            Ok(key) => match keys.entry(kid) {
                std::collections::hash_map::Entry::Occupied(entry) => {
                    tracing::warn!(kid = %entry.key(), "JWKS lists this kid twice; the first key is used");
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    tracing::debug!(kid = %entry.key(), alg = algorithm_name(key.algorithm), "JWKS key");
                    entry.insert(key);
                }
            },
            Err(err) => tracing::warn!(%kid, error = %err, "JWKS key skipped"),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_of_the_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .expect("jwk");
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Ok("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        assert_eq!(usable_algorithm(&jwk), Ok(Algorithm::RS256));
    }

    #[test]
    fn thumbprint_of_the_rfc_8037_ed25519_example() {
        // RFC 8037 Appendix A.2 (public key) and A.3 (its thumbprint).
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("x");
        let x: [u8; 32] = x.try_into().expect("32 bytes");
        let jwk = ed25519_jwk(&x);
        assert_eq!(
            jwk.common.key_id.as_deref(),
            Some("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
        );
        assert_eq!(usable_algorithm(&jwk), Ok(Algorithm::EdDSA));
        // The wire format: what identity publishes and this module parses.
        let published = serde_json::to_value(JwkSet { keys: vec![jwk] }).expect("json");
        assert_eq!(
            published,
            serde_json::json!({"keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "alg": "EdDSA",
                "use": "sig",
                "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
            }]})
        );
        let keys = parse_key_set(published.to_string().as_bytes()).expect("set");
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            ["kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"]
        );
    }

    #[test]
    fn p256_thumbprint_agrees_with_jsonwebtoken() {
        // RFC 7515 Appendix A.3's P-256 public key.
        let x = URL_SAFE_NO_PAD
            .decode("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU")
            .expect("x");
        let y = URL_SAFE_NO_PAD
            .decode("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")
            .expect("y");
        let jwk = p256_jwk(
            &x.try_into().expect("32 bytes"),
            &y.try_into().expect("32 bytes"),
        );
        assert_eq!(
            jwk.common.key_id,
            Some(jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256))
        );
        assert_eq!(usable_algorithm(&jwk), Ok(Algorithm::ES256));
    }

    #[test]
    fn unusable_keys_are_skipped_and_the_rest_kept() {
        let good = ed25519_jwk(&[9; 32]);
        let kid = good.common.key_id.clone().expect("kid");
        let set = serde_json::json!({"keys": [
            good,
            // A symmetric key: never trusted from a JWKS.
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "oct"},
            // No alg.
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1; 32]), "kid": "no-alg"},
            // The alg does not fit the key type.
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1; 32]), "alg": "ES256", "kid": "mismatch"},
            // Short key material (a verifier would index past it).
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "alg": "EdDSA", "kid": "short"},
            // An encryption key.
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([2; 32]), "alg": "EdDSA", "use": "enc", "kid": "enc"},
            // No kid.
            {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([3; 32]), "alg": "EdDSA"},
            // Not a JWK at all.
            {"kty": "XYZ"},
            "text"
        ]});
        let keys = parse_key_set(set.to_string().as_bytes()).expect("set");
        assert_eq!(keys.keys().cloned().collect::<Vec<_>>(), vec![kid]);
        for bad in [&b"[]"[..], b"{}", b"<html>", b"{\"keys\": 3}"] {
            assert!(parse_key_set(bad).is_err());
        }
    }

    #[test]
    fn cache_control_sets_the_lifetime() {
        use reqwest::header::{CACHE_CONTROL, HeaderMap, HeaderValue};
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
            max_age(&headers)
        };
        assert_eq!(max_age(&HeaderMap::new()), DEFAULT_MAX_AGE);
        assert_eq!(with("public, max-age=60"), Duration::from_secs(60));
        assert_eq!(with("Max-Age=5"), Duration::from_secs(5));
        assert_eq!(with("no-store"), Duration::ZERO);
        assert_eq!(with("public"), DEFAULT_MAX_AGE);
        assert_eq!(with("max-age=99999999"), MAX_MAX_AGE);
    }
}

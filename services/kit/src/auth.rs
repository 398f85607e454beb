//! JWT authentication: verification (algorithm, key, signature, expiry, issuer, country, roles)
//! and, for local use, HS256 minting.
//!
//! The algorithms a deployment accepts are configuration (`PULSE_JWT_ALGORITHMS`), never the
//! token's header: a token whose header names another algorithm — `none` included — is refused
//! before any key is looked at. HS256 tokens are checked against the configured shared secret
//! only; ES256, EdDSA and RS256 tokens against the key their `kid` names in identity's JWKS
//! ([`jwks`]), and that key's own `alg` must be the token's. So a token "signed" with HS256 and
//! a published public key as the HMAC secret never verifies. A valid token issued for another
//! country than the deployment's is answered with 403; a token that cannot be checked because
//! identity's keys cannot be fetched (and none are cached) with 503 `jwks-unavailable`.

pub mod jwks;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use self::jwks::{Jwks, KeyLookupError};
use crate::problem::Problem;

/// The claims of a Pulse access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user, practitioner or service the token speaks for.
    pub sub: String,
    /// Roles (`patient`, `practitioner`, `admin`, …).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Country the token is valid in (`FR`).
    pub country: String,
    /// Issuer.
    pub iss: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
}

/// Why a key, an algorithm or a token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The configured key is unusable.
    #[error("invalid JWT key: {0}")]
    Key(String),
    /// The algorithm name is unknown, not supported, or `none`.
    #[error("unsupported JWT algorithm `{0}`: use HS256, ES256, EdDSA or RS256")]
    Algorithm(String),
    /// An asymmetric algorithm is accepted but no JWKS says where its keys are, or the JWKS
    /// client cannot be built.
    #[error("JWKS: {0}")]
    Jwks(String),
    /// This authenticator can only verify.
    #[error("this authenticator holds no signing key")]
    CannotSign,
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// The algorithms a deployment may accept, by their JOSE names.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::RS256,
];

/// The JOSE name of `algorithm` (`HS256`, `ES256`, `EdDSA`, …), as tokens and JWKs spell it.
pub fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// One of [`SUPPORTED_ALGORITHMS`] by name (`HS256`, `ES256`, `EdDSA`, `RS256`; any case).
/// `none` and every other name are refused.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, AuthError> {
    SUPPORTED_ALGORITHMS
        .into_iter()
        .find(|algorithm| algorithm_name(*algorithm).eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| AuthError::Algorithm(name.to_owned()))
}

/// Whether `algorithm` is verified with identity's published keys rather than a shared secret.
pub fn is_asymmetric(algorithm: Algorithm) -> bool {
    !matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

/// The HS256 shared secret: verifies, and mints for local use.
struct SharedSecret {
    decoding: DecodingKey,
    encoding: EncodingKey,
}

/// Asymmetric tokens this process remembers as verified, at most: 32 bytes each, about 2 MiB
/// with the table's overhead when full.
const VERIFIED_TOKENS: usize = 65_536;

/// Tokens whose asymmetric signature this process has checked, so a client's every request
/// does not pay a signature check (an Ed25519 or P-256 verification costs tens of
/// microseconds; a hit, one SHA-256 of the token and a JSON parse of its claims). An entry is
/// 128 bits of the token's SHA-256 (a forged token cannot take a verified one's place, and the
/// token itself is never kept), its expiry, and the key that verified it: when a refresh of the
/// JWK set replaces or drops that key, the entry no longer counts and the token is checked
/// again (or refused). Expiry is checked on every use.
#[derive(Default)]
struct VerifiedTokens {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 16], VerifiedToken>>,
    hits: prometheus_client::metrics::counter::Counter,
}

struct VerifiedToken {
    key: Arc<DecodingKey>,
    exp: i64,
}

impl VerifiedTokens {
    fn digest(token: &str) -> [u8; 16] {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(token.as_bytes());
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hash[..16]);
        digest
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 16], VerifiedToken>> {
        // Entries are only ever whole: a panic elsewhere while holding the lock leaves none
        // half-written.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The claims of `token` (digest `digest`) if it was verified with `key` and has not
    /// expired (with the validation's `leeway`) at `now` (seconds since the epoch). Its payload
    /// is read without a signature check: the digest proves it is the payload that was checked.
    fn get(
        &self,
        token: &str,
        digest: &[u8; 16],
        key: &Arc<DecodingKey>,
        now: i64,
        leeway: u64,
    ) -> Option<Claims> {
        {
            let entries = self.lock();
            let entry = entries.get(digest)?;
            let leeway = i64::try_from(leeway).unwrap_or(0);
            // Expired exactly when jsonwebtoken would say so: exp + leeway < now.
            if !Arc::ptr_eq(&entry.key, key) || entry.exp.saturating_add(leeway) < now {
                return None;
            }
        }
        let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
        let claims = serde_json::from_slice::<Claims>(&payload).ok()?;
        self.hits.inc();
        Some(claims)
    }

    fn put(&self, digest: [u8; 16], key: Arc<DecodingKey>, exp: i64, now: i64) {
        let mut entries = self.lock();
        if entries.len() >= VERIFIED_TOKENS {
            entries.retain(|_, entry| entry.exp > now);
            if entries.len() >= VERIFIED_TOKENS {
                entries.clear();
            }
        }
        entries.insert(digest, VerifiedToken { key, exp });
    }
}

/// Verifies tokens for one deployment (one country, one issuer, one allow-list of algorithms).
pub struct Authenticator {
    country: String,
    /// The allow-list, each algorithm with the validation rules of its tokens.
    accepted: Vec<(Algorithm, Validation)>,
    hs256: Option<SharedSecret>,
    jwks: Option<Arc<Jwks>>,
    verified: VerifiedTokens,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("country", &self.country)
            .field("algorithms", &self.accepted_names())
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// HS256 only, with a shared secret: verifies and can mint (local development, tests).
    pub fn hs256(secret: &[u8], issuer: &str, country: &str) -> Result<Self, AuthError> {
        Self::new(issuer, country, &[Algorithm::HS256], Some(secret), None)
    }

    /// Accepts the `algorithms` of the allow-list: HS256 against `hs256_secret` (at least 32
    /// bytes), the asymmetric ones against the keys of `jwks`. Fails when an algorithm is not
    /// supported or lacks what verifies it.
    pub fn new(
        issuer: &str,
        country: &str,
        algorithms: &[Algorithm],
        hs256_secret: Option<&[u8]>,
        jwks: Option<Arc<Jwks>>,
    ) -> Result<Self, AuthError> {
        if algorithms.is_empty() {
            return Err(AuthError::Algorithm(String::new()));
        }
        let mut accepted: Vec<(Algorithm, Validation)> = Vec::new();
        for &algorithm in algorithms {
            if !SUPPORTED_ALGORITHMS.contains(&algorithm) {
                return Err(AuthError::Algorithm(algorithm_name(algorithm).to_owned()));
            }
            if is_asymmetric(algorithm) && jwks.is_none() {
                return Err(AuthError::Jwks(format!(
                    "{} is accepted but no JWKS URL says where identity's keys are",
                    algorithm_name(algorithm)
                )));
            }
            if !accepted.iter().any(|(known, _)| *known == algorithm) {
                accepted.push((algorithm, validation(algorithm, issuer)));
            }
        }
        let hs256 = if algorithms.contains(&Algorithm::HS256) {
            let secret = hs256_secret
                .ok_or_else(|| AuthError::Key("HS256 is accepted but no secret is set".into()))?;
            if secret.len() < 32 {
                return Err(AuthError::Key(
                    "the HS256 secret must be at least 32 bytes".into(),
                ));
            }
            Some(SharedSecret {
                decoding: DecodingKey::from_secret(secret),
                encoding: EncodingKey::from_secret(secret),
            })
        } else {
            // A secret without HS256 in the allow-list verifies nothing and mints nothing.
            None
        };
        Ok(Self {
            country: country.to_owned(),
            accepted,
            hs256,
            jwks,
            verified: VerifiedTokens::default(),
        })
    }

    /// The country this deployment serves.
    pub fn country(&self) -> &str {
        &self.country
    }

    /// The accepted algorithms, by name.
    pub fn accepted_names(&self) -> Vec<&'static str> {
        self.accepted
            .iter()
            .map(|(algorithm, _)| algorithm_name(*algorithm))
            .collect()
    }

    /// The JWKS the asymmetric algorithms are verified with, if any.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Registers the JWKS refresh counters (`pulse_jwks_fetches`, `pulse_jwks_fetch_failures`)
    /// and `pulse_verified_token_hits` (requests whose token's signature was checked before).
    pub fn register_metrics(&self, metrics: &crate::metrics::Metrics) {
        if let Some(jwks) = &self.jwks {
            jwks.register_metrics(metrics);
        }
        metrics.register(
            "verified_token_hits",
            "Requests whose asymmetric token signature this process had checked already",
            self.verified.hits.clone(),
        );
    }

    /// Verifies a bearer token: 401 for anything invalid, 403 for another country, 503
    /// (`jwks-unavailable`) when identity's keys cannot be fetched and none is cached.
    pub async fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let header = TokenHeader::parse(token).ok_or_else(|| {
            Problem::unauthorized("the token is not a well-formed JWT (header.payload.signature)")
        })?;
        let Some((algorithm, validation)) = self
            .accepted
            .iter()
            .find(|(algorithm, _)| algorithm_name(*algorithm) == header.alg)
        else {
            return Err(self.refused_algorithm(&header.alg));
        };
        let published;
        let key = if *algorithm == Algorithm::HS256 {
            match &self.hs256 {
                Some(secret) => &secret.decoding,
                // `new` keeps HS256 out of the allow-list without a secret.
                None => return Err(Problem::internal(&"HS256 accepted without a secret")),
            }
        } else {
            let name = algorithm_name(*algorithm);
            let kid = header.kid.as_deref().ok_or_else(|| {
                Problem::unauthorized(format!(
                    "the token names no key (`kid` header); {name} tokens must"
                ))
            })?;
            let Some(jwks) = &self.jwks else {
                // `new` keeps asymmetric algorithms out of the allow-list without a JWKS.
                return Err(Problem::internal(&"asymmetric algorithm without a JWKS"));
            };
            published = jwks.key(kid).await.map_err(|err| match err {
                KeyLookupError::Unknown => Problem::unauthorized(format!(
                    "the token's key `{}` is not one of the issuer's published keys",
                    shorten(kid)
                )),
                KeyLookupError::Unavailable { retry_after } => jwks_unavailable(retry_after),
            })?;
            if published.algorithm != *algorithm {
                return Err(Problem::unauthorized(format!(
                    "the token's key `{}` is an {} key, not {name}",
                    shorten(kid),
                    algorithm_name(published.algorithm)
                )));
            }
            let now = chrono::Utc::now().timestamp();
            let digest = VerifiedTokens::digest(token);
            if let Some(claims) =
                self.verified
                    .get(token, &digest, &published.key, now, validation.leeway)
            {
                return Ok(claims);
            }
            let claims = decode_checked(token, &published.key, validation, &self.country)?;
            self.verified
                .put(digest, Arc::clone(&published.key), claims.exp, now);
            return Ok(claims);
        };
        decode_checked(token, key, validation, &self.country)
    }

    fn refused_algorithm(&self, alg: &str) -> Problem {
        let accepted = self.accepted_names();
        let detail = if alg.eq_ignore_ascii_case("none") {
            format!(
                "unsigned tokens (`alg: none`) are never accepted; sign with {}",
                accepted.join(" or ")
            )
        } else {
            format!(
                "the token is signed with `{}`, which this deployment does not accept; it accepts {}",
                shorten(alg),
                accepted.join(", ")
            )
        };
        Problem::unauthorized(detail).with("acceptedAlgorithms", accepted)
    }

    /// Mints an HS256 token (only when HS256 is accepted, with its secret).
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        let secret = self.hs256.as_ref().ok_or(AuthError::CannotSign)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &secret.encoding)
            .map_err(|e| AuthError::Sign(e.to_string()))
    }
}

/// Checks `token`'s signature with `key` and its claims by `validation` (see [`validation`]),
/// then its country: 401 with the reason for an invalid token, 403 for a valid token of another
/// country than `country`. For a verifier that found the key by other means (identity checks
/// its own tokens against its keyring).
pub fn decode_checked(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
    country: &str,
) -> Result<Claims, Problem> {
    let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|err| {
        use jsonwebtoken::errors::ErrorKind;
        let reason = match err.kind() {
            ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
            ErrorKind::InvalidIssuer => "the token was issued by an unknown issuer".into(),
            ErrorKind::InvalidSignature => "the token signature is invalid".into(),
            _ => format!("the token is invalid ({err})"),
        };
        Problem::unauthorized(reason)
    })?;
    let claims = data.claims;
    if claims.country != country {
        return Err(Problem::forbidden(format!(
            "the token is for country {} but this deployment serves {country}",
            claims.country
        ))
        .with("tokenCountry", claims.country.clone())
        .with("deploymentCountry", country.to_owned()));
    }
    Ok(claims)
}

/// The rules every token of `algorithm` is checked against: issued by `issuer`, with `exp`,
/// `iss` and `sub`, 30 s of leeway on the expiry.
pub fn validation(algorithm: Algorithm, issuer: &str) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.validate_aud = false;
    validation.leeway = 30;
    validation
}

/// 503 `jwks-unavailable`: the token may be fine, but the keys to check it are out of reach.
fn jwks_unavailable(retry_after: std::time::Duration) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "jwks-unavailable",
        "Token keys unavailable",
    )
    .with_detail(
        "the keys that verify tokens cannot be fetched from identity right now; retry shortly",
    )
    .with_retry_after(retry_after.as_secs_f64().ceil().max(1.0) as u64)
}

/// At most 64 characters of a value the caller sent, for error messages.
fn shorten(value: &str) -> String {
    value.chars().take(64).collect()
}

/// The members of a JOSE header that decide how a token is verified. Read before any
/// signature check, so they are only ever compared with configuration, never trusted.
#[derive(Debug, Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Option<Self> {
        let mut segments = token.split('.');
        let header = segments.next()?;
        // Exactly three segments: a JWS in compact serialization (a two-segment `alg: none`
        // token is malformed, a five-segment JWE is not a signed token).
        if segments.next().is_none() || segments.next().is_none() || segments.next().is_some() {
            return None;
        }
        let json = URL_SAFE_NO_PAD.decode(header).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// Claims for a token valid from now for `ttl`.
pub fn claims_for(
    subject: &str,
    roles: &[String],
    country: &str,
    issuer: &str,
    ttl: std::time::Duration,
) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: subject.to_owned(),
        roles: roles.to_vec(),
        country: country.to_owned(),
        iss: issuer.to_owned(),
        iat: now,
        exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
    }
}

/// The authenticated caller, extracted from `Authorization: Bearer …`.
///
/// Needs an `Arc<Authenticator>` in the request extensions (the `pulse` server adds it).
#[derive(Debug, Clone)]
pub struct Principal {
    /// The verified claims.
    pub claims: Claims,
}

impl Principal {
    /// The subject.
    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.claims.roles.iter().any(|r| r == role)
    }

    /// 403 unless the caller has `role`.
    pub fn require_role(&self, role: &str) -> Result<(), Problem> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this action needs the `{role}` role"
            )))
        }
    }
}

/// Why the bearer token of a request was refused, kept by [`authenticate`] so the extractor
/// answers with it instead of verifying (and perhaps fetching keys) a second time.
#[derive(Debug, Clone)]
struct Refused(Problem);

/// The bearer token of a request, if any.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

fn bearer_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Middleware: verifies the bearer token once per request and, when it is valid, stores the
/// [`Principal`] in the request extensions, where the extractor, the rate limiter and the
/// idempotency scope find it. An invalid or missing token is left for the extractor to refuse
/// with its own message (401/403/503), so endpoints that need no token still work.
pub async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let authenticator = request.extensions().get::<Arc<Authenticator>>().cloned();
    let token = bearer_in(request.headers()).map(str::to_owned);
    if let Some((authenticator, token)) = authenticator.zip(token) {
        match authenticator.verify(&token).await {
            Ok(claims) => {
                request.extensions_mut().insert(Principal { claims });
            }
            Err(problem) => {
                request.extensions_mut().insert(Refused(problem));
            }
        }
    }
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        if let Some(Refused(problem)) = parts.extensions.get::<Refused>() {
            return Err(problem.clone());
        }
        let authenticator = parts
            .extensions
            .get::<Arc<Authenticator>>()
            .cloned()
            .ok_or_else(|| Problem::internal(&"no authenticator installed on the router"))?;
        let token = bearer_token(parts)
            .ok_or_else(|| Problem::unauthorized("send `Authorization: Bearer <token>`"))?;
        let claims = authenticator.verify(token).await?;
        let principal = Principal { claims };
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// Extractors for callers that must hold a role. Put them before the body in a handler's
/// arguments: a caller without the role gets 403 before the body is even read, so the order is
/// always authentication (401), then authorization (403), then validation (4xx).
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Problem;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let principal = Principal::from_request_parts(parts, state).await?;
                principal.require_role($role)?;
                Ok(Self(principal))
            }
        }
    };
}

role_extractor!(
    /// A caller with the `admin` role.
    Admin,
    "admin"
);
role_extractor!(
    /// A caller with the `patient` role.
    Patient,
    "patient"
);
role_extractor!(
    /// A caller with the `practitioner` role.
    Practitioner,
    "practitioner"
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    fn fr() -> Authenticator {
        Authenticator::hs256(SECRET, "pulse-test", "FR").expect("key")
    }

    fn token(country: &str, ttl_secs: i64) -> String {
        let mut claims = claims_for(
            "alice",
            &["patient".into()],
            country,
            "pulse-test",
            Duration::from_secs(60),
        );
        claims.exp = chrono::Utc::now().timestamp() + ttl_secs;
        fr().mint(&claims).expect("mint")
    }

    fn detail(problem: Problem) -> String {
        problem.detail.unwrap_or_default()
    }

    #[tokio::test]
    async fn a_valid_token_verifies() {
        let claims = fr().verify(&token("FR", 60)).await.expect("valid");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.roles, vec!["patient".to_owned()]);
    }

    #[tokio::test]
    async fn another_country_is_forbidden() {
        let problem = fr().verify(&token("DE", 60)).await.expect_err("DE on FR");
        assert_eq!(problem.status, 403);
        assert!(detail(problem).contains("DE"));
    }

    #[tokio::test]
    async fn expired_tokens_are_rejected() {
        let problem = fr().verify(&token("FR", -120)).await.expect_err("expired");
        assert_eq!(problem.status, 401);
        assert!(detail(problem).contains("expired"));
    }

    #[tokio::test]
    async fn a_wrong_key_is_rejected() {
        let other =
            Authenticator::hs256(b"another-secret-another-secret-another", "pulse-test", "FR")
                .expect("key");
        let claims = claims_for("mallory", &[], "FR", "pulse-test", Duration::from_secs(60));
        let forged = other.mint(&claims).expect("mint");
        assert_eq!(fr().verify(&forged).await.expect_err("forged").status, 401);
    }

    #[tokio::test]
    async fn a_wrong_issuer_is_rejected() {
        let claims = claims_for("eve", &[], "FR", "someone-else", Duration::from_secs(60));
        let token = fr().mint(&claims).expect("mint");
        assert_eq!(fr().verify(&token).await.expect_err("issuer").status, 401);
    }

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = claims_for(
            "eve",
            &["admin".into()],
            "FR",
            "pulse-test",
            Duration::from_secs(60),
        );
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"));
        for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
            let problem = fr().verify(&token).await.expect_err("alg none");
            assert_eq!(problem.status, 401);
        }
        let problem = fr()
            .verify(&format!("{header}.{body}."))
            .await
            .expect_err("alg none");
        assert!(detail(problem).contains("never accepted"));
    }

    #[tokio::test]
    async fn an_algorithm_outside_the_allow_list_is_rejected_naming_the_allowed_ones() {
        let claims = claims_for("eve", &[], "FR", "pulse-test", Duration::from_secs(60));
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("mint");
        let problem = fr().verify(&token).await.expect_err("HS512");
        assert_eq!(problem.status, 401);
        assert_eq!(
            problem.extensions["acceptedAlgorithms"],
            serde_json::json!(["HS256"])
        );
        assert!(detail(problem).contains("HS512"));
    }

    #[tokio::test]
    async fn garbage_is_unauthorized() {
        for token in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "a.b.c.d.e",
            "....",
            "e30.e30.e30",
        ] {
            let problem = fr().verify(token).await.expect_err(token);
            assert_eq!(problem.status, 401, "{token}");
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Authenticator::hs256(b"short", "i", "FR").is_err());
    }

    #[test]
    fn the_allow_list_needs_what_verifies_it() {
        let secret = [7u8; 32];
        // Asymmetric algorithms need a JWKS.
        for algorithm in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let err = Authenticator::new("i", "FR", &[algorithm], Some(&secret), None)
                .expect_err("no JWKS");
            assert!(matches!(err, AuthError::Jwks(_)), "{err}");
        }
        // HS256 needs its secret.
        let err =
            Authenticator::new("i", "FR", &[Algorithm::HS256], None, None).expect_err("no secret");
        assert!(matches!(err, AuthError::Key(_)), "{err}");
        // Unsupported algorithms are refused, and so is an empty list.
        for algorithms in [&[Algorithm::HS512][..], &[Algorithm::PS256], &[]] {
            assert!(Authenticator::new("i", "FR", algorithms, Some(&secret), None).is_err());
        }
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!(parse_algorithm("EdDSA").ok(), Some(Algorithm::EdDSA));
        assert_eq!(parse_algorithm("es256").ok(), Some(Algorithm::ES256));
        assert_eq!(parse_algorithm(" HS256 ").ok(), Some(Algorithm::HS256));
        for refused in ["none", "None", "HS512", "PS256", ""] {
            assert!(parse_algorithm(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_verifier_without_the_secret_cannot_mint() {
        let claims = claims_for("p", &[], "FR", "i", Duration::from_secs(1));
        assert!(fr().mint(&claims).is_ok());
        let jwks = Jwks::new("http://127.0.0.1:9/jwks.json", Duration::from_secs(5)).expect("jwks");
        let verifier = Authenticator::new(
            "i",
            "FR",
            &[Algorithm::EdDSA],
            Some(SECRET),
            Some(Arc::new(jwks)),
        )
        .expect("verifier");
        assert!(matches!(verifier.mint(&claims), Err(AuthError::CannotSign)));
    }

    #[test]
    fn roles_are_checked() {
        let principal = Principal {
            claims: claims_for("p", &["patient".into()], "FR", "i", Duration::from_secs(1)),
        };
        assert!(principal.require_role("patient").is_ok());
        assert_eq!(
            principal
                .require_role("admin")
                .expect_err("no admin")
                .status,
            403
        );
    }
}

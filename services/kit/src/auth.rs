//! JWT authentication: verification (signature, expiry, issuer, country, roles) and, for local
//! use, minting.
//!
//! The algorithm is fixed by configuration; a token whose header names another algorithm —
//! including `none` — is rejected, as is a token signed with another key. A valid token issued
//! for another country than the deployment's is answered with 403.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

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

/// Why a key or token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The configured key is unusable.
    #[error("invalid JWT key: {0}")]
    Key(String),
    /// The algorithm name is unknown or not supported.
    #[error("unsupported JWT algorithm `{0}`: use HS256, RS256, ES256 or EdDSA")]
    Algorithm(String),
    /// This authenticator can only verify.
    #[error("this authenticator holds no signing key")]
    CannotSign,
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Verifies tokens for one deployment (one country, one issuer, one key).
pub struct Authenticator {
    country: String,
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("country", &self.country)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// HS256 with a shared secret: verifies and can mint (local development, tests).
    pub fn hs256(secret: &[u8], issuer: &str, country: &str) -> Result<Self, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::Key(
                "the HS256 secret must be at least 32 bytes".into(),
            ));
        }
        Ok(Self::build(
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            Some(EncodingKey::from_secret(secret)),
            issuer,
            country,
        ))
    }

    /// Verifies with a public key in PEM (`RS256`, `ES256` or `EdDSA`), as published by identity.
    pub fn from_public_pem(
        algorithm: &str,
        pem: &[u8],
        issuer: &str,
        country: &str,
    ) -> Result<Self, AuthError> {
        let algorithm = parse_algorithm(algorithm)?;
        let decoding = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            other => return Err(AuthError::Algorithm(format!("{other:?}"))),
        }
        .map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Self::build(algorithm, decoding, None, issuer, country))
    }

    fn build(
        algorithm: Algorithm,
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
        issuer: &str,
        country: &str,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.validate_aud = false;
        validation.leeway = 30;
        Self {
            country: country.to_owned(),
            algorithm,
            decoding,
            encoding,
            validation,
        }
    }

    /// The country this deployment serves.
    pub fn country(&self) -> &str {
        &self.country
    }

    /// Verifies a bearer token: 401 for anything invalid, 403 for another country.
    pub fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                let reason = match err.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                    ErrorKind::InvalidIssuer => "the token was issued by an unknown issuer".into(),
                    ErrorKind::InvalidSignature => "the token signature is invalid".into(),
                    ErrorKind::InvalidAlgorithm => {
                        format!("the token must be signed with {:?}", self.algorithm)
                    }
                    _ => format!("the token is invalid ({err})"),
                };
                Problem::unauthorized(reason)
            })?;
        let claims = data.claims;
        if claims.country != self.country {
            return Err(Problem::forbidden(format!(
                "the token is for country {} but this deployment serves {}",
                claims.country, self.country
            ))
            .with("tokenCountry", claims.country.clone())
            .with("deploymentCountry", self.country.clone()));
        }
        Ok(claims)
    }

    /// Mints a token (only with a signing key, i.e. HS256 here).
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotSign)?;
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, key)
            .map_err(|e| AuthError::Sign(e.to_string()))
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

fn parse_algorithm(name: &str) -> Result<Algorithm, AuthError> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(AuthError::Algorithm(other.to_owned())),
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
/// with its own message (401/403), so endpoints that need no token still work.
pub async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let verified = request
        .extensions()
        .get::<Arc<Authenticator>>()
        .zip(bearer_in(request.headers()))
        .and_then(|(auth, token)| auth.verify(token).ok());
    if let Some(claims) = verified {
        request.extensions_mut().insert(Principal { claims });
    }
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let authenticator = parts
            .extensions
            .get::<Arc<Authenticator>>()
            .cloned()
            .ok_or_else(|| Problem::internal(&"no authenticator installed on the router"))?;
        let token = bearer_token(parts)
            .ok_or_else(|| Problem::unauthorized("send `Authorization: Bearer <token>`"))?;
        let claims = authenticator.verify(token)?;
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
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

    #[test]
    fn a_valid_token_verifies() {
        let claims = fr().verify(&token("FR", 60)).expect("valid");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.roles, vec!["patient".to_owned()]);
    }

    #[test]
    fn another_country_is_forbidden() {
        let problem = fr().verify(&token("DE", 60)).expect_err("DE on FR");
        assert_eq!(problem.status, 403);
        assert!(problem.detail.unwrap_or_default().contains("DE"));
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let problem = fr().verify(&token("FR", -120)).expect_err("expired");
        assert_eq!(problem.status, 401);
        assert!(problem.detail.unwrap_or_default().contains("expired"));
    }

    #[test]
    fn a_wrong_key_is_rejected() {
        let other =
            Authenticator::hs256(b"another-secret-another-secret-another", "pulse-test", "FR")
                .expect("key");
        let claims = claims_for("mallory", &[], "FR", "pulse-test", Duration::from_secs(60));
        let forged = other.mint(&claims).expect("mint");
        assert_eq!(fr().verify(&forged).expect_err("forged").status, 401);
    }

    #[test]
    fn a_wrong_issuer_is_rejected() {
        let claims = claims_for("eve", &[], "FR", "someone-else", Duration::from_secs(60));
        let token = fr().mint(&claims).expect("mint");
        assert_eq!(fr().verify(&token).expect_err("issuer").status, 401);
    }

    #[test]
    fn alg_none_is_rejected() {
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
            assert_eq!(fr().verify(&token).expect_err("alg none").status, 401);
        }
    }

    #[test]
    fn another_algorithm_is_rejected() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        let claims = claims_for("eve", &[], "FR", "pulse-test", Duration::from_secs(60));
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("mint");
        assert!(!header.is_empty());
        assert_eq!(fr().verify(&token).expect_err("HS512").status, 401);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Authenticator::hs256(b"short", "i", "FR").is_err());
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

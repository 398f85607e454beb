//! The keyring: identity's token-signing keys, kept in its database so that every replica
//! signs with the same key and publishes the same set at once.
//!
//! A key is generated here (Ed25519 or P-256), its private half sealed under the keyring
//! secret's subkey ([`crate::crypto::Subkeys::seal`]) and stored with its public JWK; its `kid`
//! is the RFC 7638 thumbprint of that JWK. One key signs at a time. A rotation inserts a new key
//! and gives the previous one a `retires_at` of now plus the access-token lifetime plus a minute
//! of leeway: until then it stays in the JWKS, so every token it signed verifies until it
//! expires. Rotations take a PostgreSQL advisory lock; the scheduled one only tries it, so one
//! replica rotates and the others skip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use pulse_kit::auth::Claims;
use pulse_kit::auth::jwks::{Jwk, JwkSet, ed25519_jwk, p256_jwk};
use pulse_kit::problem::Problem;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::crypto::{Subkeys, Unsealable};
use crate::settings::SigningAlgorithm;

/// Name of the advisory lock every change of the signing keys holds.
const KEYS_LOCK: &str = "pulse-identity-signing-keys";
/// How long a replaced key stays published after the last token it signed has expired.
pub const RETIREMENT_LEEWAY: Duration = Duration::from_secs(60);
/// Retired keys are deleted this long after they left the JWKS.
const RETIRED_KEYS_KEPT: Duration = Duration::from_secs(7 * 86_400);

/// Why the keyring failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored key cannot be opened with this keyring secret.
    #[error(transparent)]
    Unsealable(#[from] Unsealable),
    /// A key could not be generated, read or used.
    #[error("signing key: {0}")]
    Key(String),
}

/// The claims of an access token identity issues: the kit's [`Claims`] plus a token id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user's id.
    pub sub: String,
    /// The user's roles.
    pub roles: Vec<String>,
    /// The deployment's country.
    pub country: String,
    /// Issuer.
    pub iss: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

/// A signed access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The JWT.
    pub token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// The key that signed it.
    pub kid: String,
}

/// A freshly generated key.
struct NewKey {
    kid: String,
    algorithm: SigningAlgorithm,
    sealed: Vec<u8>,
    jwk: Jwk,
}

fn generate(subkeys: &Subkeys, algorithm: SigningAlgorithm) -> Result<NewKey, KeyError> {
    let rng = SystemRandom::new();
    let failed = |what: &str| KeyError::Key(format!("cannot {what} a {} key", algorithm.as_str()));
    let (pkcs8, jwk) = match algorithm {
        SigningAlgorithm::EdDsa => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| failed("generate"))?;
            let pair =
                Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| failed("read back"))?;
            let public: &[u8; 32] = pair
                .public_key()
                .as_ref()
                .try_into()
                .map_err(|_| failed("encode"))?;
            (pkcs8.as_ref().to_vec(), ed25519_jwk(public))
        }
        SigningAlgorithm::Es256 => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| failed("generate"))?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .map_err(|_| failed("read back"))?;
            // Uncompressed SEC1 point: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
            let point = pair.public_key().as_ref();
            let coordinate = |range: std::ops::Range<usize>| -> Result<&[u8; 32], KeyError> {
                point
                    .get(range)
                    .and_then(|c| c.try_into().ok())
                    .ok_or_else(|| failed("encode"))
            };
            (
                pkcs8.as_ref().to_vec(),
                p256_jwk(coordinate(1..33)?, coordinate(33..65)?),
            )
        }
    };
    let kid = jwk
        .common
        .key_id
        .clone()
        .ok_or_else(|| failed("name (thumbprint)"))?;
    Ok(NewKey {
        sealed: subkeys.seal(kid.as_bytes(), &pkcs8),
        kid,
        algorithm,
        jwk,
    })
}

#[derive(sqlx::FromRow)]
struct ActiveKey {
    algorithm: String,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SealedKey {
    kid: String,
    algorithm: String,
    private_key_sealed: Vec<u8>,
}

/// One key as `pulse keys` and the tests see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub algorithm: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it leaves the JWKS (`None`: it signs now).
    pub retires_at: Option<DateTime<Utc>>,
}

/// The keyring (see the module documentation).
pub struct Keyring {
    pool: PgPool,
    subkeys: Arc<Subkeys>,
    algorithm: SigningAlgorithm,
    rotation: Duration,
    access_ttl: Duration,
    issuer: String,
    country: String,
    /// Opened private keys by kid (a kid's key never changes).
    opened: Mutex<HashMap<String, EncodingKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("algorithm", &self.algorithm)
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

/// What the keyring needs besides the database.
#[derive(Debug, Clone)]
pub struct KeyringConfig {
    /// Algorithm of new keys.
    pub algorithm: SigningAlgorithm,
    /// Age at which the scheduled job rotates.
    pub rotation: Duration,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// `iss` of the tokens.
    pub issuer: String,
    /// The deployment's country (`FR`).
    pub country: String,
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl Keyring {
    /// The keyring over identity's pool.
    pub fn new(pool: PgPool, subkeys: Arc<Subkeys>, config: KeyringConfig) -> Self {
        Self {
            pool,
            subkeys,
            algorithm: config.algorithm,
            rotation: config.rotation,
            access_ttl: config.access_ttl,
            issuer: config.issuer,
            country: config.country,
            opened: Mutex::default(),
        }
    }

    /// The access-token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    async fn lock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(pulse_kit::db::advisory_key(KEYS_LOCK))
            .execute(conn)
            .await
            .map(|_| ())
    }

    async fn active(conn: &mut PgConnection) -> Result<Option<ActiveKey>, sqlx::Error> {
        sqlx::query_as("SELECT algorithm, created_at FROM signing_keys WHERE retires_at IS NULL")
            .fetch_optional(conn)
            .await
    }

    /// Inserts a new key of `algorithm`, retiring the active one (if any) once every token it
    /// signed has expired. Runs under the keys' lock.
    async fn replace(
        &self,
        conn: &mut PgConnection,
        algorithm: SigningAlgorithm,
    ) -> Result<String, KeyError> {
        let key = generate(&self.subkeys, algorithm)?;
        let retires_in = self.access_ttl + RETIREMENT_LEEWAY;
        sqlx::query(
            "UPDATE signing_keys SET retires_at = clock_timestamp() + make_interval(secs => $1)
             WHERE retires_at IS NULL",
        )
        .bind(seconds(retires_in))
        .execute(&mut *conn)
        .await?;
        let jwk = serde_json::to_value(&key.jwk).map_err(|e| KeyError::Key(e.to_string()))?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key_sealed, public_jwk, created_at, activates_at)
             VALUES ($1, $2, $3, $4, clock_timestamp(), clock_timestamp())",
        )
        .bind(&key.kid)
        .bind(key.algorithm.as_str())
        .bind(&key.sealed)
        .bind(jwk)
        .execute(&mut *conn)
        .await?;
        tracing::info!(kid = %key.kid, algorithm = key.algorithm.as_str(), "new signing key");
        Ok(key.kid)
    }

    /// Makes sure a key signs: creates the first one if there is none.
    pub async fn ensure(&self) -> Result<(), KeyError> {
        let mut tx = self.pool.begin().await?;
        Self::lock(&mut tx).await?;
        if Self::active(&mut tx).await?.is_none() {
            self.replace(&mut tx, self.algorithm).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Rotates now (`pulse keys rotate`): a new key signs from this moment; the previous one
    /// stays published until its tokens have expired. Returns the new key's id.
    pub async fn rotate(&self) -> Result<String, KeyError> {
        let mut tx = self.pool.begin().await?;
        Self::lock(&mut tx).await?;
        let kid = self.replace(&mut tx, self.algorithm).await?;
        tx.commit().await?;
        Ok(kid)
    }

    /// The scheduled rotation: when no other replica is at it, rotates if the active key is
    /// older than the rotation period or of another algorithm than configured (or creates the
    /// first key). Returns the new key's id, if one was made.
    pub async fn rotate_if_due(&self) -> Result<Option<String>, KeyError> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(pulse_kit::db::advisory_key(KEYS_LOCK))
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(None);
        }
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&mut *tx)
            .await?;
        let due = match Self::active(&mut tx).await? {
            None => true,
            Some(active) => {
                let age = (now - active.created_at).to_std().unwrap_or_default();
                age >= self.rotation || active.algorithm != self.algorithm.as_str()
            }
        };
        if !due {
            return Ok(None);
        }
        let kid = self.replace(&mut tx, self.algorithm).await?;
        tx.commit().await?;
        Ok(Some(kid))
    }

    /// Deletes keys that left the JWKS a week ago or more (their private half included).
    pub async fn prune(&self) -> Result<u64, KeyError> {
        let done = sqlx::query(
            "DELETE FROM signing_keys WHERE retires_at < now() - make_interval(secs => $1)",
        )
        .bind(seconds(RETIRED_KEYS_KEPT))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Every key, newest first.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(sqlx::query_as(
            "SELECT kid, algorithm, created_at, retires_at FROM signing_keys ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The published keys: the signing one and those not yet retired, newest first.
    pub async fn published(&self) -> Result<JwkSet, KeyError> {
        for _ in 0..2 {
            let rows: Vec<serde_json::Value> = sqlx::query_scalar(
                "SELECT public_jwk FROM signing_keys
                 WHERE retires_at IS NULL OR retires_at > clock_timestamp()
                 ORDER BY created_at DESC",
            )
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                self.ensure().await?;
                continue;
            }
            let keys = rows
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<Jwk>, _>>()
                .map_err(|e| KeyError::Key(format!("a stored public key is unreadable: {e}")))?;
            return Ok(JwkSet { keys });
        }
        Err(KeyError::Key("no signing key could be made".into()))
    }

    fn encoding_key(&self, row: &SealedKey) -> Result<EncodingKey, KeyError> {
        if let Ok(opened) = self.opened.lock()
            && let Some(key) = opened.get(&row.kid)
        {
            return Ok(key.clone());
        }
        let pkcs8 = self
            .subkeys
            .open(row.kid.as_bytes(), &row.private_key_sealed)?;
        let key = match SigningAlgorithm::parse(&row.algorithm) {
            Some(SigningAlgorithm::EdDsa) => EncodingKey::from_ed_der(&pkcs8),
            Some(SigningAlgorithm::Es256) => EncodingKey::from_ec_der(&pkcs8),
            None => {
                return Err(KeyError::Key(format!(
                    "key {} has the unknown algorithm {}",
                    row.kid, row.algorithm
                )));
            }
        };
        if let Ok(mut opened) = self.opened.lock() {
            opened.insert(row.kid.clone(), key.clone());
        }
        Ok(key)
    }

    /// Signs an access token for `user` with `roles`, with the key that signs now.
    pub async fn issue(&self, user: Uuid, roles: &[String]) -> Result<AccessToken, KeyError> {
        let mut row: Option<SealedKey> = None;
        for _ in 0..2 {
            row = sqlx::query_as(
                "SELECT kid, algorithm, private_key_sealed FROM signing_keys
                 WHERE retires_at IS NULL AND activates_at <= clock_timestamp()",
            )
            .fetch_optional(&self.pool)
            .await?;
            if row.is_some() {
                break;
            }
            self.ensure().await?;
        }
        let row = row.ok_or_else(|| KeyError::Key("no signing key could be made".into()))?;
        let algorithm = SigningAlgorithm::parse(&row.algorithm)
            .ok_or_else(|| KeyError::Key(format!("unknown algorithm {}", row.algorithm)))?;
        let key = self.encoding_key(&row)?;
        let now = Utc::now().timestamp();
        let ttl = self.access_ttl.as_secs();
        let claims = AccessClaims {
            sub: user.to_string(),
            roles: roles.to_vec(),
            country: self.country.clone(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            jti: pulse_kit::new_id().to_string(),
        };
        let header = Header {
            typ: Some("JWT".into()),
            kid: Some(row.kid.clone()),
            ..Header::new(algorithm.jwt())
        };
        let token = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| KeyError::Key(format!("cannot sign with {}: {e}", row.kid)))?;
        Ok(AccessToken {
            token,
            expires_in: ttl,
            kid: row.kid,
        })
    }

    /// Verifies an access token signed by one of identity's published keys (the key's own
    /// algorithm decides, never the token's header): 401 for anything invalid, 403 for a token
    /// of another country.
    pub async fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Problem::unauthorized("the token is not a JWT"))?;
        let kid = header
            .kid
            .ok_or_else(|| Problem::unauthorized("the token names no signing key (`kid`)"))?;
        let row: Option<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT algorithm, public_jwk FROM signing_keys
             WHERE kid = $1 AND (retires_at IS NULL OR retires_at > clock_timestamp())",
        )
        .bind(&kid)
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| Problem::from_error(&err))?;
        let (algorithm, jwk) =
            row.ok_or_else(|| Problem::unauthorized("the token's signing key is unknown"))?;
        let algorithm = SigningAlgorithm::parse(&algorithm)
            .ok_or_else(|| Problem::internal(&format!("key {kid} has algorithm {algorithm}")))?;
        let jwk: Jwk = serde_json::from_value(jwk).map_err(|e| Problem::internal(&e))?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| Problem::internal(&e))?;
        let validation = pulse_kit::auth::validation(algorithm.jwt(), &self.issuer);
        pulse_kit::auth::decode_checked(token, &decoding, &validation, &self.country)
    }
}

/// The scheduled job: makes sure a key exists at start-up, then every `interval` rotates the
/// key when it is due ([`Keyring::rotate_if_due`]) and deletes long-retired keys.
pub async fn run_rotation(keyring: Arc<Keyring>, interval: Duration, shutdown: CancellationToken) {
    loop {
        match keyring.rotate_if_due().await {
            Ok(Some(kid)) => tracing::info!(%kid, "signing key rotated on schedule"),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "scheduled key rotation failed; retrying later")
            }
        }
        match keyring.prune().await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "deleted retired signing keys"),
            Err(err) => tracing::warn!(error = %err, "deleting retired signing keys failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::KeyringSecret;

    fn subkeys() -> Subkeys {
        Subkeys::derive(&KeyringSecret::new(&[9u8; 32]).expect("secret"))
    }

    #[test]
    fn generated_keys_sign_tokens_their_jwk_verifies() {
        for algorithm in [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256] {
            let subkeys = subkeys();
            let key = generate(&subkeys, algorithm).expect("key");
            assert_eq!(key.jwk.common.key_id.as_deref(), Some(key.kid.as_str()));
            assert_eq!(key.kid.len(), 43, "base64url SHA-256");
            let pkcs8 = subkeys.open(key.kid.as_bytes(), &key.sealed).expect("open");
            let encoding = match algorithm {
                SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(&pkcs8),
                SigningAlgorithm::Es256 => EncodingKey::from_ec_der(&pkcs8),
            };
            let claims = AccessClaims {
                sub: "u".into(),
                roles: vec!["patient".into()],
                country: "FR".into(),
                iss: "pulse".into(),
                iat: Utc::now().timestamp(),
                exp: Utc::now().timestamp() + 60,
                jti: "j".into(),
            };
            let header = Header {
                kid: Some(key.kid.clone()),
                ..Header::new(algorithm.jwt())
            };
            let token = jsonwebtoken::encode(&header, &claims, &encoding).expect("sign");
            let json = serde_json::to_value(&key.jwk).expect("jwk");
            assert_eq!(json["use"], "sig");
            assert_eq!(json["alg"], algorithm.as_str());
            let jwk: Jwk = serde_json::from_value(json).expect("round trip");
            let decoding = DecodingKey::from_jwk(&jwk).expect("decoding key");
            let mut validation = jsonwebtoken::Validation::new(algorithm.jwt());
            validation.set_issuer(&["pulse"]);
            let verified = jsonwebtoken::decode::<AccessClaims>(&token, &decoding, &validation)
                .expect("verifies");
            assert_eq!(verified.claims, claims);
        }
    }

    #[test]
    fn published_keys_are_what_verifiers_accept() {
        for algorithm in [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256] {
            let key = generate(&subkeys(), algorithm).expect("key");
            assert_eq!(
                pulse_kit::auth::jwks::usable_algorithm(&key.jwk),
                Ok(algorithm.jwt())
            );
            assert_eq!(
                pulse_kit::auth::jwks::thumbprint(&key.jwk).as_deref(),
                Ok(key.kid.as_str())
            );
        }
    }
}

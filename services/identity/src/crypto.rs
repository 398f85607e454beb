//! The keyring secret's two uses, each with its own subkey (HMAC-SHA256 of the secret over a
//! distinct label, so neither use can stand in for the other): keyed hashes of one-time codes,
//! and sealing (ChaCha20-Poly1305) of the token-signing private keys stored in the database.
//! Plus the random values identity hands out: codes and refresh tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::settings::KeyringSecret;

type HmacSha256 = Hmac<Sha256>;

/// Label of the subkey that keys code hashes.
const CODE_LABEL: &[u8] = b"pulse-identity/v1/one-time-code-hash";
/// Label of the subkey that seals signing keys.
const SEAL_LABEL: &[u8] = b"pulse-identity/v1/signing-key-seal";

/// A sealed value could not be opened: another keyring secret sealed it, or it was altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a sealed signing key cannot be opened: the keyring secret (PULSE_IDENTITY_KEYRING_SECRET_FILE) is not the one that sealed it, or the row was altered"
)]
pub struct Unsealable;

/// The subkeys derived from the keyring secret.
pub struct Subkeys {
    code: [u8; 32],
    seal: LessSafeKey,
}

impl std::fmt::Debug for Subkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subkeys([redacted])")
    }
}

fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = hmac_with(secret);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    // `new_from_slice` fails only for fixed-length keys; HMAC takes keys of any length.
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

impl Subkeys {
    /// Derives both subkeys from `secret`.
    pub fn derive(secret: &KeyringSecret) -> Self {
        let bytes = secret.bytes();
        let seal = derive(&bytes, SEAL_LABEL);
        Self {
            code: derive(&bytes, CODE_LABEL),
            // A 32-byte key is exactly what ChaCha20-Poly1305 takes.
            seal: LessSafeKey::new(
                UnboundKey::new(&aead::CHACHA20_POLY1305, &seal)
                    .expect("ChaCha20-Poly1305 takes 32-byte keys"),
            ),
        }
    }

    fn code_mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = hmac_with(&self.code);
        for part in parts {
            // Length-prefixed, so no two different inputs hash alike.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The stored form of sign-in `code` sent to `phone`.
    pub fn phone_code_hash(&self, phone: &str, code: &str) -> Vec<u8> {
        self.code_mac(&[b"phone", phone.as_bytes(), code.as_bytes()])
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Whether `code` for `phone` is the one hashed into `stored` (constant time).
    pub fn phone_code_matches(&self, phone: &str, code: &str, stored: &[u8]) -> bool {
        self.code_mac(&[b"phone", phone.as_bytes(), code.as_bytes()])
            .verify_slice(stored)
            .is_ok()
    }

    /// The stored form of e-mail verification `code` sent to `email` for `user`.
    pub fn email_code_hash(&self, user: Uuid, email: &str, code: &str) -> Vec<u8> {
        self.code_mac(&[b"email", user.as_bytes(), email.as_bytes(), code.as_bytes()])
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Whether `code` is the one hashed into `stored` for `user` and `email` (constant time).
    pub fn email_code_matches(&self, user: Uuid, email: &str, code: &str, stored: &[u8]) -> bool {
        self.code_mac(&[b"email", user.as_bytes(), email.as_bytes(), code.as_bytes()])
            .verify_slice(stored)
            .is_ok()
    }

    /// Seals `plaintext` bound to `context` (the key id): random nonce, then ciphertext and tag.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = plaintext.to_vec();
        // Sealing in place only fails for inputs beyond ChaCha20's 256 GiB limit.
        if self
            .seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut sealed,
            )
            .is_err()
        {
            return Vec::new();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Subkeys::seal`] sealed with the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < aead::NONCE_LEN + self.seal.algorithm().tag_len() {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = sealed.split_at(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .seal
            .open_in_place(nonce, Aad::from(context), &mut buffer)
            .map_err(|_| Unsealable)?;
        Ok(plaintext.to_vec())
    }
}

/// A random 6-digit code (leading zeros kept).
pub fn random_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// A random opaque token of 256 bits, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of an opaque token: its SHA-256 (the token has 256 random bits, so no key
/// is needed to make guessing from the hash hopeless).
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(fill: u8) -> Subkeys {
        Subkeys::derive(&KeyringSecret::new(&[fill; 32]).expect("32 bytes"))
    }

    #[test]
    fn codes_hash_per_phone_and_compare() {
        let keys = keys(1);
        let hash = keys.phone_code_hash("+33612345678", "123456");
        assert!(keys.phone_code_matches("+33612345678", "123456", &hash));
        assert!(!keys.phone_code_matches("+33612345678", "123457", &hash));
        assert!(!keys.phone_code_matches("+33612345679", "123456", &hash));
        // Another secret, another hash.
        assert_ne!(
            hash,
            self::keys(2).phone_code_hash("+33612345678", "123456")
        );
        let user = Uuid::new_v4();
        let email = keys.email_code_hash(user, "a@example.org", "123456");
        assert!(keys.email_code_matches(user, "a@example.org", "123456", &email));
        assert!(!keys.email_code_matches(user, "b@example.org", "123456", &email));
        assert!(!keys.email_code_matches(Uuid::new_v4(), "a@example.org", "123456", &email));
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_secret_and_context() {
        let keys = keys(1);
        let sealed = keys.seal(b"kid-1", b"private key");
        assert_eq!(
            keys.open(b"kid-1", &sealed).as_deref(),
            Ok(&b"private key"[..])
        );
        assert_eq!(keys.open(b"kid-2", &sealed), Err(Unsealable));
        assert_eq!(self::keys(2).open(b"kid-1", &sealed), Err(Unsealable));
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(keys.open(b"kid-1", &altered), Err(Unsealable));
        assert_eq!(keys.open(b"kid-1", &sealed[..10]), Err(Unsealable));
        assert_ne!(keys.seal(b"kid-1", b"private key"), sealed, "fresh nonce");
    }

    #[test]
    fn random_values_have_their_shape() {
        for _ in 0..100 {
            let code = random_code();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
        let token = random_token();
        assert_eq!(token.len(), 43);
        assert_ne!(token, random_token());
        assert_eq!(token_hash(&token).len(), 32);
    }
}

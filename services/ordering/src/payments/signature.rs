//! Webhook signatures, Stripe's scheme: header `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`,
//! where each `v1` is HMAC-SHA256 over `"<t>.<raw body>"` with an endpoint secret. Several `v1`
//! values (and several configured secrets) allow rotating the secret without downtime.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Largest accepted distance between the signature time and now.
pub const TOLERANCE_SECONDS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// Why a webhook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No usable `t=` or `v1=` in the header.
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    /// The timestamp is too far from now (a replay, or a clock far off).
    #[error("the signature timestamp is {age} s away from now (tolerance {TOLERANCE_SECONDS} s)")]
    Stale {
        /// Seconds between the signature time and now.
        age: i64,
    },
    /// No `v1` matches the body with any configured secret.
    #[error("no signature matches the payload")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    // HMAC takes keys of any length, so this never fails; no panic either way.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `v1` signature of `body` at `timestamp` with `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    mac(secret, timestamp, body)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// A full header value signing `body` with every secret of `secrets`.
pub fn header(secrets: &[&[u8]], timestamp: i64, body: &[u8]) -> String {
    let mut value = format!("t={timestamp}");
    for secret in secrets {
        value.push_str(",v1=");
        value.push_str(&sign(secret, timestamp, body));
    }
    value
}

/// Verifies a `Stripe-Signature` header against `body` at time `now` (Unix seconds); returns the
/// signed timestamp. Comparisons are constant-time.
pub fn verify<S: AsRef<[u8]>>(
    header: &str,
    body: &[u8],
    secrets: &[S],
    now: i64,
) -> Result<i64, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no timestamp `t=`"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no `v1=` signature"));
    }
    let age = now.saturating_sub(timestamp);
    if age.abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale { age });
    }
    for secret in secrets {
        for signature in &signatures {
            if mac(secret.as_ref(), timestamp, body)
                .is_some_and(|mac| mac.verify_slice(signature).is_ok())
            {
                return Ok(timestamp);
            }
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;

    #[test]
    fn a_signed_body_verifies_within_the_tolerance() {
        let secrets = vec![b"whsec_a".to_vec()];
        let value = header(&[b"whsec_a"], 1_000, BODY);
        assert_eq!(verify(&value, BODY, &secrets, 1_000), Ok(1_000));
        assert_eq!(verify(&value, BODY, &secrets, 1_300), Ok(1_000));
        assert_eq!(verify(&value, BODY, &secrets, 700), Ok(1_000));
        assert_eq!(
            verify(&value, BODY, &secrets, 1_301),
            Err(SignatureError::Stale { age: 301 })
        );
    }

    #[test]
    fn a_changed_body_or_another_secret_does_not_verify() {
        let secrets = vec![b"whsec_a".to_vec()];
        let value = header(&[b"whsec_a"], 1_000, BODY);
        assert_eq!(
            verify(&value, b"{}", &secrets, 1_000),
            Err(SignatureError::Mismatch)
        );
        let other = header(&[b"whsec_b"], 1_000, BODY);
        assert_eq!(
            verify(&other, BODY, &secrets, 1_000),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = value.replacen("t=1000", "t=1001", 1);
        assert_eq!(
            verify(&moved, BODY, &secrets, 1_000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_of_several_signatures_and_secrets_may_match() {
        // During a rotation the sender signs with the old and the new secret.
        let value = header(&[b"whsec_old", b"whsec_new"], 50, BODY);
        assert_eq!(verify(&value, BODY, &[b"whsec_new".to_vec()], 50), Ok(50));
        assert_eq!(verify(&value, BODY, &[b"whsec_old".to_vec()], 50), Ok(50));
        // And the receiver may accept two secrets.
        let value = header(&[b"whsec_new"], 50, BODY);
        let both = vec![b"whsec_old".to_vec(), b"whsec_new".to_vec()];
        assert_eq!(verify(&value, BODY, &both, 50), Ok(50));
    }

    #[test]
    fn malformed_headers_say_what_is_missing() {
        let secrets = vec![b"s".to_vec()];
        assert_eq!(
            verify("v1=00", BODY, &secrets, 0),
            Err(SignatureError::Malformed("no timestamp `t=`"))
        );
        assert_eq!(
            verify("t=0", BODY, &secrets, 0),
            Err(SignatureError::Malformed("no `v1=` signature"))
        );
        assert_eq!(
            verify("t=0,v1=zz", BODY, &secrets, 0),
            Err(SignatureError::Malformed("no `v1=` signature"))
        );
        assert_eq!(
            verify("", BODY, &secrets, 0),
            Err(SignatureError::Malformed("no timestamp `t=`"))
        );
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key "secret", message "1.{}"), computed independently.
        assert_eq!(
            sign(b"secret", 1, b"{}"),
            "1122767b193110cfec322b6f199b599edbf608ed087f2d27afb0b97d99523908"
        );
    }
}

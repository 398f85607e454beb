//! The refresh-token cookie of browser apps: `pulse_refresh`, set by `POST /v1/auth/token`
//! with `refreshTokenIn: cookie` and renewed by each refresh made with it.
//!
//! Its attributes keep the token out of scripts and other sites' requests: `HttpOnly` (no
//! script reads it, so an injected one cannot steal it), `Secure` (HTTPS only; Chrome and
//! Firefox also accept it from the loopback, `http://127.0.0.1:8080/` of a local run),
//! `SameSite=Strict` (a browser sends it only with requests that come from the API's own
//! site), and `Path=/v1/auth` (only to the sign-in endpoints, not with every API call). Its
//! `Max-Age` is the refresh token's lifetime; clearing it repeats the attributes with
//! `Max-Age=0`.

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use pulse_kit::problem::Problem;

/// The cookie's name.
pub const REFRESH_COOKIE: &str = "pulse_refresh";

/// The attributes after the value (`Max-Age` is added to them).
const ATTRIBUTES: &str = "HttpOnly; Secure; SameSite=Strict; Path=/v1/auth";

/// The `Set-Cookie` value that hands `token` to the browser for `max_age` seconds.
pub fn set(token: &str, max_age: u64) -> Result<HeaderValue, Problem> {
    // The tokens are base64url: always a valid cookie value, so a failure is a bug.
    let valid = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        // The message, which may be logged, does not quote the token.
        return Err(Problem::internal(
            &"a refresh token is not base64url, so it cannot be a cookie value",
        ));
    }
    HeaderValue::from_str(&format!(
        "{REFRESH_COOKIE}={token}; {ATTRIBUTES}; Max-Age={max_age}"
    ))
    .map_err(|err| Problem::internal(&err))
}

/// The `Set-Cookie` value that makes the browser drop the cookie.
pub fn cleared() -> HeaderValue {
    HeaderValue::from_static(
        "pulse_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=0",
    )
}

/// The value of the `pulse_refresh` cookie the request carries, if any (the first one: a
/// browser sends the most specific path first). Empty values count as absent.
pub fn read(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim() == REFRESH_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_carries_every_attribute_and_clearing_repeats_them() {
        let value = set("abc-DEF_123", 2_592_000).expect("a cookie");
        assert_eq!(
            value.to_str().expect("ascii"),
            "pulse_refresh=abc-DEF_123; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=2592000"
        );
        assert_eq!(
            cleared().to_str().expect("ascii"),
            format!("{REFRESH_COOKIE}=; {ATTRIBUTES}; Max-Age=0")
        );
        assert!(set("a;b", 1).is_err());
        assert!(set("", 1).is_err());
    }

    #[test]
    fn the_cookie_is_found_among_others_and_in_any_cookie_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(read(&headers), None);
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; other=1"));
        assert_eq!(read(&headers), None);
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=b;pulse_refresh=tok-1 ; pulse_refresh=tok-2"),
        );
        assert_eq!(read(&headers).as_deref(), Some("tok-1"));
        let mut empty = HeaderMap::new();
        empty.insert(COOKIE, HeaderValue::from_static("pulse_refresh="));
        assert_eq!(read(&empty), None);
        let mut prefixed = HeaderMap::new();
        prefixed.insert(COOKIE, HeaderValue::from_static("xpulse_refresh=tok"));
        assert_eq!(read(&prefixed), None);
    }
}

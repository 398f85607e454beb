//! How the flows' errors answer: an RFC 9457 problem with a stable type, the field at fault
//! where there is one, and `Retry-After` where waiting helps. Database errors answer 503 when
//! the database is unreachable, 500 otherwise ([`Problem::from_error`]).

use axum::http::StatusCode;
use pulse_kit::problem::Problem;

use crate::domain::{Invalid, PhoneError};
use crate::keys::KeyError;
use crate::otp::OtpError;
use crate::profile::ProfileError;
use crate::roles::RolesError;
use crate::sessions::{RefreshError, SignInError};
use pulse_kit::sms::SmsError;

impl From<Invalid> for Problem {
    fn from(err: Invalid) -> Self {
        let field = err.field;
        if err.against_today {
            Problem::invalid_combination(err.to_string()).with("field", field)
        } else {
            Problem::unprocessable(err.to_string()).with("field", field)
        }
    }
}

impl From<PhoneError> for Problem {
    fn from(err: PhoneError) -> Self {
        match err {
            PhoneError::Invalid(invalid) => invalid.into(),
            other @ PhoneError::OtherCountry { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "phone-wrong-country",
                "Phone number of another country",
            )
            .with_detail(other.to_string())
            .with("field", "phone"),
        }
    }
}

/// A database error: 503 when it is unreachable, and a concurrent request with the same
/// `Idempotency-Key` that committed first also answers 503 (the middleware then replays it).
fn db(err: &sqlx::Error) -> Problem {
    if let sqlx::Error::Database(db) = err
        && db.is_unique_violation()
        && db.table() == Some("idempotency_keys")
    {
        return Problem::unavailable(
            "a request with the same Idempotency-Key was answered meanwhile; retry with it to get that answer",
        )
        .with_retry_after(1);
    }
    Problem::from_error(err)
}

impl From<OtpError> for Problem {
    fn from(err: OtpError) -> Self {
        match err {
            OtpError::Phone(err) => err.into(),
            OtpError::Limited { limit, retry_after } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "otp-rate-limited",
                "Too many codes requested",
            )
            .with_detail(format!(
                "{}; retry in {retry_after} s",
                match limit {
                    crate::otp::SendLimit::PhoneInterval =>
                        "a code was sent to this phone less than a minute ago",
                    crate::otp::SendLimit::PhoneDaily =>
                        "this phone got as many codes as a day allows",
                    crate::otp::SendLimit::ClientAddress =>
                        "this address requested as many codes as an hour allows",
                }
            ))
            .with("limit", limit.as_str())
            .with_retry_after(retry_after),
            OtpError::Sms(SmsError::Rejected(reason)) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "sms-rejected",
                "The SMS provider refused this number",
            )
            .with_detail(format!(
                "no code was sent ({reason}); check the number, or use another phone"
            ))
            .with("field", "phone"),
            OtpError::Sms(SmsError::Unavailable(_)) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sms-unavailable",
                "Codes cannot be sent right now",
            )
            .with_detail(
                "the SMS provider did not take the message, so no code was sent and nothing was counted; retry shortly",
            )
            .with_retry_after(5),
            OtpError::Db(err) => db(&err),
        }
    }
}

/// 401 `invalid-code`.
fn wrong_code(attempts_left: i32) -> Problem {
    let detail = if attempts_left > 0 {
        format!("the code is wrong; {attempts_left} more attempts with this code")
    } else {
        "the code is wrong, and that was its last attempt: request a new code".to_owned()
    };
    Problem::new(StatusCode::UNAUTHORIZED, "invalid-code", "Wrong code")
        .with_detail(detail)
        .with("attemptsLeft", attempts_left.max(0))
}

impl From<KeyError> for Problem {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::Db(err) => db(&err),
            other => Problem::internal(&other),
        }
    }
}

impl From<SignInError> for Problem {
    fn from(err: SignInError) -> Self {
        match err {
            SignInError::Phone(err) => err.into(),
            SignInError::Invalid(err) => err.into(),
            SignInError::NoValidCode => Problem::new(
                StatusCode::UNAUTHORIZED,
                "code-expired",
                "No valid code",
            )
            .with_detail(
                "this phone has no code that can still be used (it expired after 5 minutes, was used, or was guessed wrong 5 times): request a new code",
            ),
            SignInError::WrongCode { attempts_left } => wrong_code(attempts_left),
            SignInError::Keys(err) => err.into(),
            SignInError::Outbox(err) => Problem::from_error(&err),
            SignInError::Db(err) => db(&err),
        }
    }
}

impl From<RefreshError> for Problem {
    fn from(err: RefreshError) -> Self {
        match err {
            RefreshError::Invalid => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-refresh-token",
                "Invalid refresh token",
            )
            .with_detail("the refresh token is unknown, expired or revoked: sign in again"),
            RefreshError::Reused => Problem::new(
                StatusCode::UNAUTHORIZED,
                "refresh-token-reused",
                "Refresh token reused",
            )
            .with_detail(
                "this refresh token was already exchanged, so it may have been copied: every token of the session is revoked; sign in again",
            ),
            RefreshError::Keys(err) => err.into(),
            RefreshError::Db(err) => db(&err),
        }
    }
}

/// 401 `invalid-refresh-token` for a refresh or logout that carries no refresh token at all.
pub fn no_refresh_token() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
        "No refresh token",
    )
    .with_detail(
        "the request carries no refresh token: send refreshToken in the JSON body, or the pulse_refresh cookie that POST /v1/auth/token sets with refreshTokenIn: cookie (with a JSON body such as {}); without either, sign in again",
    )
}

/// 404 `user-not-found`.
pub fn user_not_found(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "user-not-found", "User not found").with_detail(detail)
}

impl From<ProfileError> for Problem {
    fn from(err: ProfileError) -> Self {
        match err {
            ProfileError::NotFound => user_not_found(
                "no user has the id of this token's subject: sign in with a phone code to get an identity token",
            ),
            ProfileError::Invalid(err) => err.into(),
            ProfileError::Email(err) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "email-unavailable",
                "E-mail cannot be verified right now",
            )
            .with_detail(format!("{err}; nothing was changed"))
            .with_retry_after(60),
            ProfileError::EmailLimited { retry_after } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "email-rate-limited",
                "A code was sent moments ago",
            )
            .with_detail(format!(
                "a verification code was sent less than a minute ago; nothing was changed; retry in {retry_after} s"
            ))
            .with("field", "email")
            .with_retry_after(retry_after),
            ProfileError::NoPendingCode => Problem::new(
                StatusCode::CONFLICT,
                "email-code-expired",
                "No verification pending",
            )
            .with_detail(
                "no code awaits verification for the profile's e-mail address (none was sent, it expired after 30 minutes, or was guessed wrong 5 times): send the address again with PATCH /v1/me/profile to get a new code",
            ),
            ProfileError::WrongCode { attempts_left } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-email-code",
                "Wrong code",
            )
            .with_detail(if attempts_left > 0 {
                format!("the code is wrong; {attempts_left} more attempts with this code")
            } else {
                "the code is wrong, and that was its last attempt: send the address again to get a new code".to_owned()
            })
            .with("field", "code")
            .with("attemptsLeft", attempts_left.max(0)),
            ProfileError::Db(err) => db(&err),
        }
    }
}

impl From<RolesError> for Problem {
    fn from(err: RolesError) -> Self {
        match err {
            RolesError::NotFound(_) => user_not_found(err.to_string()),
            RolesError::Invalid(err) => err.into(),
            RolesError::Outbox(err) => Problem::from_error(&err),
            RolesError::Db(err) => db(&err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_and_a_bug_a_500() {
        let refused =
            || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let problem = Problem::from(SignInError::Db(refused()));
        assert_eq!((problem.status, problem.retry_after_secs), (503, Some(1)));
        let problem = Problem::from(OtpError::Db(sqlx::Error::PoolTimedOut));
        assert_eq!(problem.status, 503);
        let problem = Problem::from(RefreshError::Keys(KeyError::Db(refused())));
        assert_eq!(problem.status, 503);
        let problem = Problem::from(ProfileError::Db(sqlx::Error::RowNotFound));
        assert_eq!(problem.status, 500);
    }

    #[test]
    fn limits_answer_429_with_retry_after() {
        let problem = Problem::from(OtpError::Limited {
            limit: crate::otp::SendLimit::PhoneInterval,
            retry_after: 42,
        });
        assert_eq!(problem.status, 429);
        assert_eq!(problem.retry_after_secs, Some(42));
        assert_eq!(problem.extensions["limit"], "phone-interval");
        let problem = Problem::from(OtpError::Sms(SmsError::Unavailable("timeout".into())));
        assert_eq!(problem.status, 503);
        assert!(problem.problem_type.ends_with("/sms-unavailable"));
    }
}

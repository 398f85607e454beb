//! Identity's HTTP API: sign-in by phone code (`/v1/auth/*`), the caller's profile
//! (`/v1/me/profile*`), role grants (`/v1/users/{id}/roles`) and the published keys
//! (`/.well-known/jwks.json`). Handlers authorize, parse, call a flow ([`crate::otp`],
//! [`crate::sessions`], [`crate::profile`], [`crate::roles`], [`crate::keys`]) and answer; the
//! flows' errors become problems in `http/problems.rs`, and the bodies are in `http/views.rs`.
//!
//! Callers are authenticated by the server's verifier (the kit's, with the deployment's
//! algorithm allow-list) or, for a token that names one of identity's own keys, by the keyring
//! directly: identity trusts the tokens it signed without fetching its own JWKS over HTTP.
//! Authorization comes before the body, so refusals come in the order 401, 403, then 4xx.
//!
//! A browser app keeps its refresh token in the `pulse_refresh` cookie rather than in storage
//! a script can read: it signs in with `refreshTokenIn: cookie`, then refreshes and signs out
//! with a JSON body that leaves `refreshToken` out (`{}`), and the token travels only in the
//! cookie (see `http/cookie.rs`). Refreshing and signing out with the cookie still require a
//! `Content-Type: application/json` body: together with `SameSite=Strict`, that is the defence
//! against cross-site request forgery, since another site can neither make the browser attach
//! the cookie nor send a JSON body without a CORS preflight, which the API never grants.

mod cookie;
mod problems;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{CACHE_CONTROL, PRAGMA, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use pulse_kit::auth::jwks::JWKS_PATH;
use pulse_kit::auth::{Principal, bearer_token};
use pulse_kit::idempotency::{Answer, IdempotencyKey, RecordAnswer};
use pulse_kit::problem::{ApiJson, ApiPath, Problem};
use uuid::Uuid;

pub use cookie::REFRESH_COOKIE;
pub use problems::{no_refresh_token, user_not_found};
pub use views::{
    EmailVerification, JwksDocument, OtpAccepted, OtpRequest, ProfilePatch, ProfileView,
    RefreshRequest, RefreshTokenIn, RolesInput, RolesView, TokenRequest, TokenResponse,
    phone_schema,
};

use crate::keys::Keyring;
use crate::otp::Otp;
use crate::profile::{ProfileChange, Profiles};
use crate::roles::Roles;
use crate::sessions::{Session, Sessions};
use crate::store::UserRow;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Sending codes.
    pub otp: Otp,
    /// Signing in, refreshing, signing out.
    pub sessions: Sessions,
    /// The caller's profile.
    pub profiles: Profiles,
    /// Role grants.
    pub roles: Roles,
    /// Signing keys.
    pub keyring: Arc<Keyring>,
    /// Take the client address from the first `X-Forwarded-For` hop.
    pub trust_forwarded_for: bool,
}

/// The routes.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/auth/otp", post(send_otp))
        .route("/v1/auth/token", post(sign_in))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/me/profile", get(get_profile).patch(update_profile))
        .route("/v1/me/profile/email/verify", post(verify_email))
        .route("/v1/users/{id}/roles", put(set_roles))
        .route(JWKS_PATH, get(jwks))
        .with_state(state)
}

// ------------------------------------------------------------------------------ extractors

/// Whether `token`'s header names a key (`kid`) and an algorithm identity signs with.
fn names_an_identity_key(token: &str) -> bool {
    jsonwebtoken::decode_header(token).is_ok_and(|header| {
        header.kid.is_some()
            && matches!(
                header.alg,
                jsonwebtoken::Algorithm::EdDSA | jsonwebtoken::Algorithm::ES256
            )
    })
}

/// The authenticated caller (see the module documentation).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// The caller's user id: the token's subject, which identity's tokens make a UUID. A
    /// subject that is no user id (a development token from `pulse token`) has no profile.
    pub fn user_id(&self) -> Result<Uuid, Problem> {
        self.0.subject().parse().map_err(|_| {
            user_not_found(format!(
                "the token's subject `{}` is not a user id: sign in with a phone code to get an identity token",
                self.0.subject()
            ))
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Self(principal.clone()));
        }
        if let Some(token) = bearer_token(parts).map(str::to_owned)
            && names_an_identity_key(&token)
        {
            let claims = state.keyring.verify(&token).await?;
            let principal = Principal { claims };
            parts.extensions.insert(principal.clone());
            return Ok(Self(principal));
        }
        Principal::from_request_parts(parts, state).await.map(Self)
    }
}

/// A caller with the `admin` role (403 before the body is read).
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Principal);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        principal.require_role("admin")?;
        Ok(Self(principal))
    }
}

/// The client's address, as the kit's rate limiter takes it: the first `X-Forwarded-For` hop
/// when the deployment trusts its proxy (`PULSE_TRUST_FORWARDED_FOR`), else the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress(pub String);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let address = pulse_kit::ratelimit::client_address(
            &parts.headers,
            &parts.extensions,
            state.trust_forwarded_for,
        );
        Ok(Self(
            address.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
        ))
    }
}

/// Adds `Cache-Control: no-store` (token responses, RFC 6749 §5.1; personal data).
fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The answer with a session's tokens, its refresh token delivered `to` the body or the
/// cookie (then the body has none).
fn tokens(session: Session, to: RefreshTokenIn) -> Result<Response, Problem> {
    match to {
        RefreshTokenIn::Body => Ok(no_store(ApiJson(TokenResponse::from(session)))),
        RefreshTokenIn::Cookie => {
            let cookie = cookie::set(&session.refresh_token, session.refresh_expires_in)?;
            let mut response = no_store(ApiJson(
                TokenResponse::from(session).without_refresh_token(),
            ));
            response.headers_mut().append(SET_COOKIE, cookie);
            Ok(response)
        }
    }
}

/// The refresh token a request presents and where it came from: the body's `refreshToken`
/// when there is one, else the `pulse_refresh` cookie; neither is a 401.
fn presented(
    input: RefreshRequest,
    headers: &HeaderMap,
) -> Result<(String, RefreshTokenIn), Problem> {
    match input.refresh_token {
        Some(token) => Ok((token, RefreshTokenIn::Body)),
        None => cookie::read(headers)
            .map(|token| (token, RefreshTokenIn::Cookie))
            .ok_or_else(no_refresh_token),
    }
}

/// `problem`, clearing the cookie when it was the cookie's token that was refused (401): a
/// dead token is of no use to the browser.
fn refused(problem: Problem, from: RefreshTokenIn) -> Response {
    let clear =
        from == RefreshTokenIn::Cookie && problem.status == StatusCode::UNAUTHORIZED.as_u16();
    let mut response = problem.into_response();
    if clear {
        response.headers_mut().append(SET_COOKIE, cookie::cleared());
    }
    response
}

// ------------------------------------------------------------------------------------ auth

/// Sends a 6-digit sign-in code to a phone of the deployment's country by SMS. The answer is
/// the same whether or not the phone belongs to a user. Limits: one code per phone per minute,
/// ten per phone per day, and a number per client address per hour.
///
/// With the sandbox SMS provider (development mode only) the answer also carries the code as
/// `sandboxCode`, so that a local web app can show it; with a real provider it never does.
#[utoipa::path(post, path = "/v1/auth/otp", tag = "identity", request_body = OtpRequest,
    responses((status = 202, body = OtpAccepted, description = "a code is on its way (for any phone); `sandboxCode` only in development, with the sandbox SMS provider"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "validation-failed (field phone), phone-wrong-country, sms-rejected"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "otp-rate-limited (Retry-After; `limit`: phone-interval, phone-daily or client-address)"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "sms-unavailable (Retry-After): nothing was sent or counted")))]
pub async fn send_otp(
    State(app): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(input): ApiJson<OtpRequest>,
) -> Result<Response, Problem> {
    let sent = app.otp.send(&input.phone, &client).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(OtpAccepted::from(sent))).into_response())
}

/// Signs in with the code sent to the phone: an access token (JWT signed by identity, 15
/// minutes by default) and a refresh token. The first sign-in of a phone creates its user
/// with the role `patient`. Each code allows 5 attempts; after that a new code is needed.
///
/// With `refreshTokenIn: cookie` (browser apps) the refresh token is set in the `pulse_refresh`
/// cookie (`HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=` its lifetime) and the
/// body has no `refreshToken`; the default, `body`, answers it in the body.
#[utoipa::path(post, path = "/v1/auth/token", tag = "identity", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse, description = "signed in; the refresh token is in the body (`refreshToken`), or with `refreshTokenIn: cookie` in the `pulse_refresh` cookie only",
               headers(("Set-Cookie" = String, description = "with `refreshTokenIn: cookie` only: `pulse_refresh=<refresh token>; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=<refreshTokenExpiresIn>`"))),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid-code (`attemptsLeft`) or code-expired (request a new code)"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "validation-failed (field phone, code or refreshTokenIn), phone-wrong-country"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "service-unavailable (Retry-After)")))]
pub async fn sign_in(
    State(app): State<AppState>,
    ApiJson(input): ApiJson<TokenRequest>,
) -> Result<Response, Problem> {
    let session = app.sessions.sign_in(&input.phone, &input.code).await?;
    tokens(session, input.refresh_token_in)
}

/// Exchanges a refresh token for new tokens. Each refresh token works once: presenting one
/// that was already exchanged revokes the whole session (every token issued from that
/// sign-in), as a copied token would.
///
/// The token is the body's `refreshToken`, or, when the body leaves it out (`{}`), the
/// `pulse_refresh` cookie; the new one goes back the same way (a new cookie and no
/// `refreshToken` in the body, or in the body). A refused cookie is cleared. The body must be
/// JSON (`Content-Type: application/json`) in both cases: with the cookie's `SameSite=Strict`,
/// that keeps other sites from refreshing on a user's behalf (CSRF).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "identity", request_body = RefreshRequest,
    params(("pulse_refresh" = Option<String>, Cookie, description = "the refresh token, when the body has no `refreshToken` (set by `POST /v1/auth/token` with `refreshTokenIn: cookie`)")),
    responses((status = 200, body = TokenResponse, description = "new tokens; the new refresh token in the body (`refreshToken`) when it came in the body, in the `pulse_refresh` cookie only when it came in the cookie",
               headers(("Set-Cookie" = String, description = "when the cookie was used: the new `pulse_refresh=<refresh token>; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=<refreshTokenExpiresIn>`"))),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid-refresh-token (unknown, expired or revoked, or neither refreshToken nor the cookie sent) or refresh-token-reused (the session is revoked)",
               headers(("Set-Cookie" = String, description = "when the cookie was used: clears it (`pulse_refresh=; …; Max-Age=0`)"))),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "service-unavailable (Retry-After)")))]
pub async fn refresh(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<RefreshRequest>,
) -> Result<Response, Problem> {
    let (token, from) = presented(input, &headers)?;
    match app.sessions.refresh(&token).await {
        Ok(session) => tokens(session, from),
        Err(err) => Ok(refused(Problem::from(err), from)),
    }
}

/// Signs out: revokes every refresh token of the session. Answers 204 for unknown tokens too
/// (RFC 7009). Access tokens already issued stay valid until they expire.
///
/// The token is the body's `refreshToken`, or, when the body leaves it out (`{}`), the
/// `pulse_refresh` cookie, which the answer then clears. As for a refresh, the body must be
/// JSON: with `SameSite=Strict`, no other site can sign a user out (CSRF).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "identity", request_body = RefreshRequest,
    params(("pulse_refresh" = Option<String>, Cookie, description = "the refresh token, when the body has no `refreshToken`")),
    responses((status = 204, description = "the session is revoked",
               headers(("Set-Cookie" = String, description = "when the cookie was used: clears it (`pulse_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=0`)"))),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "invalid-refresh-token: neither refreshToken nor the cookie was sent"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "service-unavailable (Retry-After)")))]
pub async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<RefreshRequest>,
) -> Result<Response, Problem> {
    let (token, from) = presented(input, &headers)?;
    app.sessions
        .logout(&token)
        .await
        .map_err(|err| Problem::from_error(&err))?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if from == RefreshTokenIn::Cookie {
        response.headers_mut().append(SET_COOKIE, cookie::cleared());
    }
    Ok(response)
}

// --------------------------------------------------------------------------------- profile

/// The caller's profile.
#[utoipa::path(get, path = "/v1/me/profile", tag = "identity",
    responses((status = 200, body = ProfileView),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "unauthorized"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "forbidden (a token of another country)"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "user-not-found")),
    security(("bearer" = [])))]
pub async fn get_profile(State(app): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    let user = app.profiles.get(caller.user_id()?).await?;
    Ok(no_store(ApiJson(ProfileView::from(user))))
}

fn profile_answer(user: &UserRow) -> Answer {
    Answer::json(StatusCode::OK, &ProfileView::from(user.clone()))
}

/// Changes the caller's profile: fields left out are kept, `null` removes one (not the
/// language). A new e-mail address is unverified until the 6-digit code sent to it comes back
/// through `POST /v1/me/profile/email/verify`; sending the unverified address again sends a new
/// code (one a minute). The change is applied whole or not at all.
#[utoipa::path(patch, path = "/v1/me/profile", tag = "identity", request_body = ProfilePatch,
    responses((status = 200, body = ProfileView),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "unauthorized"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "forbidden"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "user-not-found"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "validation-failed (`field`: name, language, dateOfBirth or email)"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "email-rate-limited (Retry-After)"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "email-unavailable: the code cannot be sent, nothing changed")),
    security(("bearer" = [])))]
pub async fn update_profile(
    State(app): State<AppState>,
    caller: Caller,
    key: Option<IdempotencyKey>,
    ApiJson(patch): ApiJson<ProfilePatch>,
) -> Result<Answer, Problem> {
    let id = caller.user_id()?;
    let change = ProfileChange::from(patch);
    let user = app
        .profiles
        .update(
            id,
            &change,
            RecordAnswer::new(key.as_ref(), &profile_answer),
        )
        .await?;
    Ok(profile_answer(&user))
}

/// Verifies the caller's e-mail address with the code sent to it.
#[utoipa::path(post, path = "/v1/me/profile/email/verify", tag = "identity", request_body = EmailVerification,
    responses((status = 200, body = ProfileView, description = "the address is verified"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "unauthorized"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "user-not-found"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "email-code-expired: no code is pending; send the address again"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "invalid-email-code (`attemptsLeft`) or validation-failed (field code)")),
    security(("bearer" = [])))]
pub async fn verify_email(
    State(app): State<AppState>,
    caller: Caller,
    key: Option<IdempotencyKey>,
    ApiJson(input): ApiJson<EmailVerification>,
) -> Result<Answer, Problem> {
    let id = caller.user_id()?;
    let user = app
        .profiles
        .verify_email(
            id,
            &input.code,
            RecordAnswer::new(key.as_ref(), &profile_answer),
        )
        .await?;
    Ok(profile_answer(&user))
}

// ----------------------------------------------------------------------------------- roles

/// Sets a user's roles (role `admin`): some of `patient`, `practitioner`, `admin`. Announced
/// by a `RolesChanged` event; the user's next refresh carries them.
#[utoipa::path(put, path = "/v1/users/{id}/roles", tag = "identity", request_body = RolesInput,
    params(("id" = Uuid, Path, description = "the user's id")),
    responses((status = 200, body = RolesView),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "bad-request (id is not a UUID)"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "unauthorized"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "forbidden (not an admin)"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "user-not-found"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "validation-failed (field roles)")),
    security(("bearer" = [])))]
pub async fn set_roles(
    State(app): State<AppState>,
    AdminCaller(admin): AdminCaller,
    ApiPath(id): ApiPath<String>,
    key: Option<IdempotencyKey>,
    ApiJson(input): ApiJson<RolesInput>,
) -> Result<Answer, Problem> {
    let id: Uuid = id.parse().map_err(|_| {
        Problem::bad_request(format!("id: `{id}` is not a UUID")).with("field", "id")
    })?;
    let answer = |user: &UserRow| {
        Answer::json(
            StatusCode::OK,
            &RolesView {
                id: user.id,
                roles: user.roles.clone(),
            },
        )
    };
    let user = app
        .roles
        .set(
            id,
            &input.roles,
            admin.subject(),
            RecordAnswer::new(key.as_ref(), &answer),
        )
        .await?;
    Ok(answer(&user))
}

// ------------------------------------------------------------------------------------ keys

/// The public keys that verify identity's access tokens (RFC 7517): the signing key and the
/// ones replaced less than a token lifetime ago. Cacheable for a minute.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity",
    responses((status = 200, body = JwksDocument, headers(("Cache-Control" = String, description = "public, max-age=60"))),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "service-unavailable (Retry-After)")))]
pub async fn jwks(State(app): State<AppState>) -> Result<Response, Problem> {
    let set = app.keyring.published().await?;
    let mut response = ApiJson(set).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(response)
}

/// The OpenAPI document of identity's endpoints.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(send_otp, sign_in, refresh, logout, get_profile, update_profile, verify_email,
          set_roles, jwks),
    components(schemas(Problem, OtpRequest, OtpAccepted, TokenRequest, TokenResponse,
                       RefreshRequest, ProfileView, ProfilePatch, EmailVerification, RolesInput,
                       RolesView, JwksDocument)),
    tags((name = "identity", description = "Sign-in by phone code, tokens, profiles, roles and the published signing keys"))
)]
pub struct IdentityApi;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(<IdentityApi as utoipa::OpenApi>::openapi()).expect("JSON")
    }

    fn required(doc: &Value, schema: &str) -> Vec<String> {
        doc["components"]["schemas"][schema]["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_document_states_the_cookie_and_sandbox_fields_as_they_are_sent() {
        let doc = document();
        if std::env::var_os("PRINT_IDENTITY_OPENAPI").is_some() {
            println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
        }
        let schemas = &doc["components"]["schemas"];
        // Left out of the body in cookie mode, a string when there.
        assert!(!required(&doc, "TokenResponse").contains(&"refreshToken".to_owned()));
        assert!(required(&doc, "TokenResponse").contains(&"refreshTokenExpiresIn".to_owned()));
        assert_eq!(
            schemas["TokenResponse"]["properties"]["refreshToken"]["type"],
            "string"
        );
        // `{}` is a valid body of a refresh or logout by cookie; null is not a token.
        assert!(required(&doc, "RefreshRequest").is_empty());
        assert_eq!(
            schemas["RefreshRequest"]["properties"]["refreshToken"]["type"],
            "string"
        );
        assert_eq!(
            schemas["TokenRequest"]["properties"]["refreshTokenIn"]["enum"],
            serde_json::json!(["body", "cookie"])
        );
        assert!(!required(&doc, "TokenRequest").contains(&"refreshTokenIn".to_owned()));
        assert!(!required(&doc, "OtpAccepted").contains(&"sandboxCode".to_owned()));
        assert_eq!(
            schemas["OtpAccepted"]["properties"]["sandboxCode"]["type"],
            "string"
        );
        for path in ["/v1/auth/refresh", "/v1/auth/logout"] {
            let parameters = &doc["paths"][path]["post"]["parameters"];
            assert_eq!(parameters[0]["in"], "cookie", "{path}: {parameters}");
            assert_eq!(parameters[0]["name"], REFRESH_COOKIE);
            assert_ne!(parameters[0]["required"], true);
        }
    }
}

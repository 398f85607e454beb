//! Request and response bodies of identity's HTTP API (JSON, camelCase).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, SchemaType, Type};

use crate::domain::{self, Numbering};
use crate::otp::OtpSent;
use crate::profile::ProfileChange;
use crate::sessions::Session;
use crate::store::UserRow;

/// `POST /v1/auth/otp`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtpRequest {
    /// The phone, international (`+33 6 12 34 56 78`) or national (`06 12 34 56 78`).
    #[schema(schema_with = any_phone_schema)]
    pub phone: String,
}

/// The answer to `POST /v1/auth/otp`, the same for every phone (but for `sandboxCode`, which
/// only a development deployment sends).
#[derive(Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtpAccepted {
    /// Seconds the code stays valid.
    pub expires_in_seconds: i64,
    /// Seconds before another code may be requested for this phone.
    pub resend_after_seconds: i64,
    /// Development only: the code just sent, when the SMS provider is the sandbox (which runs
    /// only with `PULSE_DEVELOPMENT_MODE=true`), so that a local web app can show it. Never
    /// sent with a real provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = sandbox_code_schema)]
    pub sandbox_code: Option<String>,
}

impl std::fmt::Debug for OtpAccepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpAccepted")
            .field("expires_in_seconds", &self.expires_in_seconds)
            .field("resend_after_seconds", &self.resend_after_seconds)
            .field(
                "sandbox_code",
                &self.sandbox_code.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

impl From<OtpSent> for OtpAccepted {
    fn from(sent: OtpSent) -> Self {
        Self {
            expires_in_seconds: sent.expires_in,
            resend_after_seconds: sent.resend_after,
            sandbox_code: sent.sandbox_code,
        }
    }
}

/// Where the refresh token of a new or refreshed session is delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshTokenIn {
    /// In the JSON body's `refreshToken`, for clients that keep it themselves (the default).
    #[default]
    Body,
    /// In the `pulse_refresh` cookie (`HttpOnly; Secure; SameSite=Strict; Path=/v1/auth`),
    /// for a browser app: no script can read it, and the body has no `refreshToken`.
    Cookie,
}

/// `POST /v1/auth/token`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// The phone the code was sent to.
    #[schema(schema_with = any_phone_schema)]
    pub phone: String,
    /// The 6-digit code.
    #[schema(schema_with = code_schema)]
    pub code: String,
    /// Where the refresh token goes: `body` (the default) or `cookie`.
    #[serde(default)]
    #[schema(schema_with = refresh_token_in_schema)]
    pub refresh_token_in: RefreshTokenIn,
}

/// `POST /v1/auth/refresh` and `POST /v1/auth/logout`: the refresh token in the body, or `{}`
/// with the `pulse_refresh` cookie.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    /// The refresh token of the session, for a client that got it in a body. Leave it out to
    /// use the `pulse_refresh` cookie instead; when both are there, this one is used.
    #[serde(default, deserialize_with = "string_if_present")]
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
}

/// A field that, when present, must be a string (not `null`).
fn string_if_present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// A session's tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The access token: a JWT to send as `Authorization: Bearer …` to every component.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token stays valid.
    pub expires_in: u64,
    /// The refresh token: opaque, good for one `POST /v1/auth/refresh`. Absent when it was
    /// delivered in the `pulse_refresh` cookie instead (`refreshTokenIn: cookie` at sign-in,
    /// and every refresh by that cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
    /// Seconds the refresh token stays valid.
    pub refresh_token_expires_in: u64,
    /// The user's id (the access token's subject).
    pub user_id: Uuid,
    /// Whether this sign-in created the user.
    pub new_user: bool,
}

impl From<Session> for TokenResponse {
    fn from(session: Session) -> Self {
        Self {
            access_token: session.access.token,
            token_type: "Bearer",
            expires_in: session.access.expires_in,
            refresh_token: Some(session.refresh_token),
            refresh_token_expires_in: session.refresh_expires_in,
            user_id: session.user.id,
            new_user: session.new_user,
        }
    }
}

impl TokenResponse {
    /// The same answer without the refresh token (delivered in the cookie instead).
    #[must_use]
    pub fn without_refresh_token(self) -> Self {
        Self {
            refresh_token: None,
            ..self
        }
    }
}

/// A user's profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    /// The user's id.
    pub id: Uuid,
    /// Phone, E.164.
    pub phone: String,
    /// Name.
    pub name: Option<String>,
    /// Preferred language (BCP 47).
    pub language: String,
    /// Date of birth.
    pub date_of_birth: Option<NaiveDate>,
    /// E-mail address.
    pub email: Option<String>,
    /// Whether the e-mail address is verified.
    pub email_verified: bool,
    /// Roles.
    pub roles: Vec<String>,
    /// Sign-up.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for ProfileView {
    fn from(user: UserRow) -> Self {
        Self {
            id: user.id,
            phone: user.phone,
            name: user.name,
            language: user.language,
            date_of_birth: user.date_of_birth,
            email_verified: user.email.is_some() && user.email_verified_at.is_some(),
            email: user.email,
            roles: user.roles,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// A present field, `null` included: `Some(None)` for `null`, `None` when absent.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// `PATCH /v1/me/profile`: a field left out is kept, `null` removes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfilePatch {
    /// Name, 1 to 100 characters; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = name_schema)]
    pub name: Option<Option<String>>,
    /// Preferred language, a BCP 47 tag (`fr`, `en-GB`); cannot be removed.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = language_schema)]
    pub language: Option<Option<String>>,
    /// Date of birth, `YYYY-MM-DD`, not in the future; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = date_of_birth_schema)]
    pub date_of_birth: Option<Option<String>>,
    /// E-mail address; a new one is unverified until the code sent to it comes back.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = email_schema)]
    pub email: Option<Option<String>>,
}

impl From<ProfilePatch> for ProfileChange {
    fn from(patch: ProfilePatch) -> Self {
        Self {
            name: patch.name,
            language: patch.language,
            date_of_birth: patch.date_of_birth,
            email: patch.email,
        }
    }
}

/// `POST /v1/me/profile/email/verify`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailVerification {
    /// The 6-digit code sent to the address.
    #[schema(schema_with = code_schema)]
    pub code: String,
}

// The schemas state the domain's rules with the patterns built next to them (crate::domain),
// so the document and the parsers cannot drift.

const PHONE_DESCRIPTION: &str = "A phone of the deployment's country, international (`+33 6 12 34 56 78`, `0033 6…`) or national (`06 12 34 56 78`); spaces, dots, dashes, slashes and parentheses between the digits";

/// A phone of the deployment's country, as [`Numbering::parse`] accepts it.
pub fn phone_schema(numbering: &Numbering) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .min_length(Some(1))
        .max_length(Some(domain::PHONE_MAX_CHARS))
        .pattern(Some(numbering.pattern()))
        .description(Some(PHONE_DESCRIPTION))
        .build()
}

/// The phone before the country is known; [`crate::Identity`]'s document replaces it with
/// [`phone_schema`] of the deployment's country.
fn any_phone_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .min_length(Some(1))
        .max_length(Some(domain::PHONE_MAX_CHARS))
        .description(Some(PHONE_DESCRIPTION))
        .build()
}

fn code_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(domain::code_pattern()))
        .description(Some("The 6-digit code"))
        .build()
}

fn refresh_token_in_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(["body", "cookie"]))
        .default(Some(serde_json::Value::from("body")))
        .description(Some(
            "Where the refresh token goes: `body` (the default) answers it as `refreshToken`; `cookie`, for a browser app, sets it in the `pulse_refresh` cookie (`HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=` its lifetime) and leaves it out of the body, so no script can read it",
        ))
        .build()
}

fn sandbox_code_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(domain::code_pattern()))
        .description(Some(
            "Development only: the 6-digit code just sent, present only when the SMS provider is the sandbox (PULSE_DEVELOPMENT_MODE=true), so that a local web app can show it; never sent with a real provider",
        ))
        .build()
}

fn name_schema() -> Object {
    pulse_kit::text::nullable_schema(
        domain::NAME_MAX_CHARS,
        "Name, 1 to 100 characters; `null` removes it",
    )
}

fn language_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .min_length(Some(2))
        .max_length(Some(domain::LANGUAGE_MAX_CHARS))
        .pattern(Some(domain::language_pattern()))
        .description(Some(
            "Preferred language, a BCP 47 tag (`fr`, `en-GB`); cannot be removed (no `null`)",
        ))
        .build()
}

fn date_of_birth_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
        .description(Some(
            "Date of birth, `YYYY-MM-DD`, neither in the future nor more than 130 years ago (else 422 invalid-combination); `null` removes it",
        ))
        .build()
}

fn email_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(6))
        .max_length(Some(domain::EMAIL_MAX_CHARS))
        .pattern(Some(domain::email_pattern()))
        .description(Some(
            "E-mail address; a new one is unverified until the code sent to it comes back; `null` removes it",
        ))
        .build()
}

/// `PUT /v1/users/{id}/roles`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolesInput {
    /// The user's roles from now on: some of `patient`, `practitioner`, `admin`.
    #[schema(schema_with = roles_schema)]
    pub roles: Vec<String>,
}

/// At least one of [`crate::domain::ROLES`], as `parse_roles` accepts them.
fn roles_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some(crate::domain::ROLES.iter().copied())),
        )
        .min_items(Some(1))
        .description(Some(
            "The user's roles from now on: some of `patient`, `practitioner`, `admin`",
        ))
        .build()
}

/// A user's roles.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolesView {
    /// The user.
    pub id: Uuid,
    /// Roles, sorted.
    pub roles: Vec<String>,
}

/// The JWK set (RFC 7517): `{"keys": [...]}`, each key with `kid`, `alg`, `use: "sig"` and
/// its public material (OKP/Ed25519 `x`, or EC/P-256 `x` and `y`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JwksDocument {
    /// The published public keys, the signing one first.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
}

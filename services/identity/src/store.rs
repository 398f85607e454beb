//! Identity's PostgreSQL tables as the flows share them: users, advisory locks, the clock.
//! Each flow runs its own transaction and passes its connection in.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Columns of a user row.
const USER_COLUMNS: &str = "id, phone, name, language, date_of_birth, email, email_verified_at, roles, created_at, updated_at";

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    /// Stable id (the tokens' subject).
    pub id: Uuid,
    /// E.164 phone number.
    pub phone: String,
    /// Name, if given.
    pub name: Option<String>,
    /// Preferred language (BCP 47).
    pub language: String,
    /// Date of birth, if given.
    pub date_of_birth: Option<NaiveDate>,
    /// E-mail address, if given.
    pub email: Option<String>,
    /// When that address was verified (`None`: not yet).
    pub email_verified_at: Option<DateTime<Utc>>,
    /// Roles, sorted.
    pub roles: Vec<String>,
    /// Sign-up.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Holds the advisory lock `name` until the transaction ends.
pub async fn lock(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(pulse_kit::db::advisory_key(name))
        .execute(conn)
        .await
        .map(|_| ())
}

/// The database's clock now (not the transaction's start, which may be long past after a
/// lock wait).
pub async fn now(conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(conn)
        .await
}

/// The user `id`.
pub async fn user(conn: &mut PgConnection, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The user `id`, locked until the transaction ends.
pub async fn user_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The user with `phone`.
pub async fn user_by_phone(
    conn: &mut PgConnection,
    phone: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE phone = $1"
    ))
    .bind(phone)
    .fetch_optional(conn)
    .await
}

/// Creates the user of `phone` with `roles` and `language`, unless one exists; returns the new
/// user, or `None` when the phone had one already.
pub async fn insert_user(
    conn: &mut PgConnection,
    phone: &str,
    language: &str,
    roles: &[String],
    now: DateTime<Utc>,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO users (id, phone, language, roles, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)
         ON CONFLICT (phone) DO NOTHING
         RETURNING {USER_COLUMNS}"
    ))
    .bind(pulse_kit::new_id())
    .bind(phone)
    .bind(language)
    .bind(roles)
    .bind(now)
    .fetch_optional(conn)
    .await
}

/// Writes the profile fields of `user` (name, language, date of birth, e-mail and its
/// verification time) and returns the row as stored.
pub async fn update_profile(
    conn: &mut PgConnection,
    user: &UserRow,
    now: DateTime<Utc>,
) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE users SET name = $2, language = $3, date_of_birth = $4, email = $5,
                          email_verified_at = $6, updated_at = $7
         WHERE id = $1
         RETURNING {USER_COLUMNS}"
    ))
    .bind(user.id)
    .bind(&user.name)
    .bind(&user.language)
    .bind(user.date_of_birth)
    .bind(&user.email)
    .bind(user.email_verified_at)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// Replaces the roles of user `id`; returns the row as stored.
pub async fn set_roles(
    conn: &mut PgConnection,
    id: Uuid,
    roles: &[String],
    now: DateTime<Utc>,
) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE users SET roles = $2, updated_at = $3 WHERE id = $1 RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(roles)
    .bind(now)
    .fetch_one(conn)
    .await
}

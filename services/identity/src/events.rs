//! Identity's events, written to its outbox in the transaction of the change they announce.
//! They carry no contact data (phone, e-mail): other components ask identity's `Directory`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Type of [`UserRegistered`].
pub const USER_REGISTERED: &str = "UserRegistered";
/// Type of [`RolesChanged`].
pub const ROLES_CHANGED: &str = "RolesChanged";
/// Type of [`SignedIn`].
pub const SIGNED_IN: &str = "SignedIn";

/// A user signed in for the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistered {
    /// The new user.
    pub user_id: Uuid,
    /// Roles (`patient`).
    pub roles: Vec<String>,
    /// Preferred language (BCP 47).
    pub language: String,
    /// When.
    pub registered_at: DateTime<Utc>,
}

/// An existing user signed in with a one-time code (a new session; refreshes are not
/// sign-ins). Notifier tells the user, so a sign-in they did not make does not go unseen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedIn {
    /// The user.
    pub user_id: Uuid,
    /// When.
    pub signed_in_at: DateTime<Utc>,
}

/// An administrator changed a user's roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolesChanged {
    /// The user.
    pub user_id: Uuid,
    /// Roles now.
    pub roles: Vec<String>,
    /// Roles before.
    pub previous_roles: Vec<String>,
    /// Subject of the administrator's token.
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
}

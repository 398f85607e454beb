//! Granting roles (`PUT /v1/users/{id}/roles`, administrators only): the user's roles become
//! exactly the ones given, with a `RolesChanged` event in the same transaction. Tokens issued
//! before keep their roles until they expire; the next refresh carries the new ones.

use pulse_kit::idempotency::BeforeCommit;
use pulse_kit::outbox::{Outbox, OutboxError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{self, Invalid};
use crate::events::{ROLES_CHANGED, RolesChanged};
use crate::store::{self, UserRow};

/// Why the roles were not changed.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// No user has this id.
    #[error("no user has the id {0}")]
    NotFound(Uuid),
    /// A role is unknown, or none was given.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The event could not be written.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The flow (see the module documentation).
#[derive(Debug, Clone)]
pub struct Roles {
    pool: PgPool,
    outbox: Outbox,
}

impl Roles {
    /// The flow over identity's pool and outbox.
    pub fn new(pool: PgPool, outbox: Outbox) -> Self {
        Self { pool, outbox }
    }

    /// Sets the roles of user `id` to `raw_roles`, on behalf of the administrator `by`; `hook`
    /// runs before the commit. Setting the roles a user has already changes nothing and
    /// announces nothing.
    pub async fn set(
        &self,
        id: Uuid,
        raw_roles: &[String],
        by: &str,
        hook: impl BeforeCommit<UserRow>,
    ) -> Result<UserRow, RolesError> {
        let roles = domain::parse_roles(raw_roles)?;
        let mut tx = self.pool.begin().await?;
        let user = store::user_for_update(&mut tx, id)
            .await?
            .ok_or(RolesError::NotFound(id))?;
        let mut previous = user.roles.clone();
        previous.sort();
        let stored = if previous == roles {
            user
        } else {
            let now = store::now(&mut tx).await?;
            let stored = store::set_roles(&mut tx, id, &roles, now).await?;
            let event = RolesChanged {
                user_id: id,
                roles: roles.clone(),
                previous_roles: previous,
                changed_by: by.to_owned(),
                changed_at: now,
            };
            self.outbox
                .append(&mut tx, &id.to_string(), ROLES_CHANGED, &event)
                .await?;
            tracing::info!(user = %id, roles = ?roles, by, "roles changed");
            stored
        };
        hook.run(&mut tx, &stored).await?;
        tx.commit().await?;
        Ok(stored)
    }
}

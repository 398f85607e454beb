//! Users' notification preferences: per-channel opt-outs and quiet hours in the country's local
//! time. A user without a row has every channel on and no quiet hours.

use chrono::{NaiveTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::domain::Preferences;

/// Preferences of `user`, on `conn` (the delivery's transaction).
pub async fn load(conn: &mut PgConnection, user: &str) -> Result<Preferences, sqlx::Error> {
    let row: Option<PrefRow> = sqlx::query_as(
        "SELECT email_enabled, sms_enabled, in_app_enabled, quiet_start, quiet_end
         FROM preferences WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(PrefRow::into_domain).unwrap_or_default())
}

#[derive(Debug, sqlx::FromRow)]
struct PrefRow {
    email_enabled: bool,
    sms_enabled: bool,
    in_app_enabled: bool,
    quiet_start: Option<NaiveTime>,
    quiet_end: Option<NaiveTime>,
}

impl PrefRow {
    fn into_domain(self) -> Preferences {
        Preferences {
            email: self.email_enabled,
            sms: self.sms_enabled,
            in_app: self.in_app_enabled,
            quiet_hours: self.quiet_start.zip(self.quiet_end),
        }
    }
}

/// Reads and changes users' preferences.
#[derive(Debug, Clone)]
pub struct PreferenceStore {
    db: PgPool,
}

impl PreferenceStore {
    /// The store over notifier's schema.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// `user`'s preferences.
    pub async fn get(&self, user: &str) -> Result<Preferences, sqlx::Error> {
        let mut conn = self.db.acquire().await?;
        load(&mut conn, user).await
    }

    /// Replaces `user`'s preferences.
    pub async fn put(&self, user: &str, prefs: &Preferences) -> Result<(), sqlx::Error> {
        let (start, end) = prefs.quiet_hours.unzip();
        sqlx::query(
            "INSERT INTO preferences
                 (user_id, email_enabled, sms_enabled, in_app_enabled, quiet_start, quiet_end, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (user_id) DO UPDATE SET
                 email_enabled = EXCLUDED.email_enabled,
                 sms_enabled = EXCLUDED.sms_enabled,
                 in_app_enabled = EXCLUDED.in_app_enabled,
                 quiet_start = EXCLUDED.quiet_start,
                 quiet_end = EXCLUDED.quiet_end,
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(user)
        .bind(prefs.email)
        .bind(prefs.sms)
        .bind(prefs.in_app)
        .bind(start)
        .bind(end)
        .bind(Utc::now())
        .execute(&self.db)
        .await?;
        Ok(())
    }
}

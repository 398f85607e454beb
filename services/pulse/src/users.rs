//! `pulse users grant`: sets a user's roles from the command line. This is how a country's
//! first administrator gets the role: through the API only an administrator grants roles. The
//! person signs in once (the answer of `POST /v1/auth/token` carries their `userId`); a platform
//! engineer then runs this where identity's settings are (in a cluster: `kubectl exec` into an
//! identity pod). The change goes through identity's own flow, with its `RolesChanged` event.

use anyhow::Context;
use clap::{Args, Subcommand};
use pulse_identity::roles::Roles;
use pulse_identity::store::UserRow;
use pulse_kit::config::CountryConfig;
use pulse_kit::idempotency::NoHook;
use pulse_kit::outbox::Outbox;
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::Env;
use uuid::Uuid;

/// `pulse users`.
#[derive(Debug, Clone, Args)]
pub struct UsersArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// What `pulse users` does.
#[derive(Debug, Clone, Subcommand)]
pub enum UsersCommand {
    /// Set a user's roles (exactly these; `patient`, `practitioner`, `admin`). Needs
    /// PULSE_DATABASE_URL and the country (PULSE_COUNTRY_FILE or PULSE_COUNTRY__*); prints the
    /// user id and its roles.
    Grant {
        /// The user's id (`userId` in the answer of `POST /v1/auth/token`).
        #[arg(long)]
        user: Uuid,
        /// The roles, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
}

/// Runs `pulse users …` with the settings in `env`.
pub async fn run(env: &Env, args: &UsersArgs) -> anyhow::Result<()> {
    match &args.command {
        UsersCommand::Grant { user, roles } => {
            let granted = grant(env, *user, roles).await?;
            println!("{} {}", granted.id, granted.roles.join(","));
            Ok(())
        }
    }
}

/// Sets the roles of `user` to `roles` through identity's roles flow.
pub async fn grant(env: &Env, user: Uuid, roles: &[String]) -> anyhow::Result<UserRow> {
    let server = ServerSettings::read(env)?;
    let country = CountryConfig::read(env)?;
    let keyspace = pulse_kit::server::keyspace(&country, server.instance.as_deref())?;
    let pool = pulse_kit::db::schema_pool(server.database_url.expose(), "identity", 2)?;
    let flow = Roles::new(
        pool.clone(),
        Outbox::new(&country.code, &keyspace, "identity"),
    );
    let granted = flow
        .set(user, roles, "pulse users grant", NoHook)
        .await
        .with_context(|| format!("granting {} to {user}", roles.join(",")));
    pool.close().await;
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grant_sets_the_roles_of_a_user_and_refuses_unknown_users_and_roles() {
        let db = pulse_kit::testing::TestDatabase::create().await;
        pulse_kit::db::migrate(&db.url, "identity", &pulse_identity::MIGRATIONS)
            .await
            .expect("migrate");
        let pool = pulse_kit::db::schema_pool(&db.url, "identity", 2).expect("pool");
        let user = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO users (id, phone, language, roles)
             VALUES ($1, '+33612345678', 'fr-FR', ARRAY['patient'])",
        )
        .bind(user)
        .execute(&pool)
        .await
        .expect("a user");
        let env = Env::from_map([
            ("PULSE_DATABASE_URL", db.url.clone()),
            (
                "PULSE_JWT_SECRET",
                pulse_kit::testing::TEST_JWT_SECRET.to_owned(),
            ),
            ("PULSE_COUNTRY__CODE", "FR".to_owned()),
            ("PULSE_COUNTRY__TIMEZONE", "Europe/Paris".to_owned()),
            ("PULSE_COUNTRY__CURRENCY", "EUR".to_owned()),
            ("PULSE_COUNTRY__LOCALE", "fr-FR".to_owned()),
        ]);
        let roles = vec!["patient".to_owned(), "admin".to_owned()];
        let granted = grant(&env, user, &roles).await.expect("grant");
        let mut got = granted.roles.clone();
        got.sort();
        assert_eq!(got, ["admin", "patient"]);
        let events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE event_type = 'RolesChanged' AND partition_key = $1",
        )
        .bind(user.to_string())
        .fetch_one(&pool)
        .await
        .expect("events");
        assert_eq!(events, 1, "the change is announced");
        let unknown = grant(&env, Uuid::now_v7(), &roles).await;
        assert!(
            unknown.is_err_and(|e| format!("{e:#}").contains("no user")),
            "an unknown user is refused"
        );
        let bad = grant(&env, user, &["owner".to_owned()]).await;
        assert!(bad.is_err(), "an unknown role is refused");
    }
}

//! `pulse keys rotate`: replaces identity's token-signing key now, from any machine that has
//! identity's settings (in a cluster: `kubectl exec` into an identity pod). The new key signs
//! from this moment in every replica, which all read the keys from the database; the previous
//! key stays in the JWKS until every token it signed has expired. Prints the new key's id.

use anyhow::Context;
use clap::{Args, Subcommand};
use pulse_identity::settings::IdentitySettings;
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::Env;

/// `pulse keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// What to do with the keys.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// What `pulse keys` does.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Sign with a new key from now on; the previous one stays published until its tokens
    /// have expired. Needs PULSE_DATABASE_URL and identity's settings
    /// (PULSE_IDENTITY_KEYRING_SECRET_FILE, …); prints the new key id.
    Rotate,
}

/// Runs `pulse keys …` with the settings in `env`.
pub async fn run(env: &Env, args: &KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Rotate => {
            println!("{}", rotate(env).await?);
            Ok(())
        }
    }
}

/// Rotates identity's signing key now; returns the new key's id.
pub async fn rotate(env: &Env) -> anyhow::Result<String> {
    let server = ServerSettings::read(env)?;
    let settings = IdentitySettings::read(env, &server)?;
    let database_url = server.database_url.expose();
    // The schema may be new (a first rotation before the first start): migrating is idempotent.
    pulse_kit::db::migrate(database_url, "identity", &pulse_identity::MIGRATIONS)
        .await
        .context("migrating `identity`")?;
    let pool = pulse_kit::db::schema_pool(database_url, "identity", 2)?;
    // Rotating signs nothing, so the keyring needs no country.
    let keyring = pulse_identity::keyring(pool.clone(), &settings, "");
    let kid = keyring.rotate().await.context("rotating the signing key")?;
    pool.close().await;
    Ok(kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotate_makes_a_new_signing_key_and_keeps_the_previous_one_published() {
        let db = pulse_kit::testing::TestDatabase::create().await;
        let dir = pulse_kit::testing::TempDir::new("keys-rotate");
        let secret = dir.path().join("keyring");
        std::fs::write(&secret, "a-keyring-secret-of-more-than-32-bytes-0123456789")
            .expect("secret");
        let env = Env::from_map([
            ("PULSE_DATABASE_URL", db.url.clone()),
            (
                "PULSE_JWT_SECRET",
                pulse_kit::testing::TEST_JWT_SECRET.to_owned(),
            ),
            ("PULSE_DEVELOPMENT_MODE", "true".to_owned()),
            (
                "PULSE_IDENTITY_KEYRING_SECRET_FILE",
                secret.display().to_string(),
            ),
        ]);
        let first = rotate(&env).await.expect("first rotation");
        let second = rotate(&env).await.expect("second rotation");
        assert_ne!(first, second);
        let pool = pulse_kit::db::schema_pool(&db.url, "identity", 1).expect("pool");
        let keys: Vec<(String, bool)> =
            sqlx::query_as("SELECT kid, retires_at IS NULL FROM signing_keys ORDER BY created_at")
                .fetch_all(&pool)
                .await
                .expect("keys");
        assert_eq!(keys, vec![(first, false), (second, true)]);
        pool.close().await;

        let wrong = Env::from_map([
            ("PULSE_DATABASE_URL", db.url.clone()),
            (
                "PULSE_JWT_SECRET",
                pulse_kit::testing::TEST_JWT_SECRET.to_owned(),
            ),
            ("PULSE_DEVELOPMENT_MODE", "true".to_owned()),
        ]);
        let err = rotate(&wrong).await.expect_err("no keyring secret");
        assert!(
            err.to_string()
                .contains("PULSE_IDENTITY_KEYRING_SECRET_FILE"),
            "{err}"
        );
    }
}

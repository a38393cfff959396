//! First start: the default environment, its write key, and an admin token.
//!
//! On the first start the collector creates the environment `default` with the configured
//! write key (or a generated one). When no admin token exists and none is configured, it
//! generates one, stores its hash, and writes the token itself to `admin-token` in the data
//! folder (readable by the owner only), so that the operator can find it again; later
//! starts read and print it from there.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::auth::lookup_hash;
use crate::config::Config;
use crate::store::{Environment, Store, TokenScope};

const DEFAULT_ENVIRONMENT_SETTING: &str = "default_environment";
const DEFAULT_ENVIRONMENT_NAME: &str = "default";
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// What start-up established, for the banner.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The default environment.
    pub environment: Environment,
    /// Its first write key.
    pub write_key: String,
    /// The generated admin token and the file holding it, when there is one.
    pub admin_token: Option<(String, PathBuf)>,
}

/// Makes sure the default environment and an admin token exist.
///
/// # Errors
///
/// When the database or the data folder cannot be written.
pub async fn run(store: &Store, config: &Config) -> anyhow::Result<Bootstrapped> {
    let environment = default_environment(store, config).await?;
    let write_key = store
        .write_keys(&environment.id)
        .await?
        .into_iter()
        .next()
        .context("the default environment has no write key")?;

    if let Some(token) = &config.admin_token {
        store
            .add_admin_token(&lookup_hash(token), &TokenScope::All, "EBB_ADMIN_TOKEN")
            .await?;
    }
    let token_file = config.data_dir.join(ADMIN_TOKEN_FILE);
    if store.admin_token_count().await? == 0 {
        let token = generate_secret("ebb_admin_");
        write_secret_file(&token_file, &token)?;
        store
            .add_admin_token(&lookup_hash(&token), &TokenScope::All, "generated")
            .await?;
    }
    let admin_token = match fs::read_to_string(&token_file) {
        Ok(token) => Some((token.trim().to_owned(), token_file)),
        Err(_) => None,
    };

    Ok(Bootstrapped {
        environment,
        write_key,
        admin_token,
    })
}

async fn default_environment(store: &Store, config: &Config) -> anyhow::Result<Environment> {
    if let Some(id) = store.instance_setting(DEFAULT_ENVIRONMENT_SETTING).await? {
        let found = store.find_environment(&id).await?;
        return found.context("the default environment was deleted");
    }

    let write_key = match &config.write_key {
        Some(key) => key.clone(),
        None => generate_secret("wk_"),
    };
    let created = store
        .create_environment(
            DEFAULT_ENVIRONMENT_NAME,
            &write_key,
            Some(DEFAULT_ENVIRONMENT_SETTING),
        )
        .await;
    let environment = match created {
        Ok(environment) => environment,
        // Another collector on the same database created it at the same moment.
        Err(_)
            if store
                .instance_setting(DEFAULT_ENVIRONMENT_SETTING)
                .await?
                .is_some() =>
        {
            return Box::pin(default_environment(store, config)).await;
        }
        Err(error) => return Err(error).context("while creating the default environment"),
    };
    tracing::info!(env.id = %environment.id, "created the default environment");
    Ok(environment)
}

/// A random secret: the prefix and 32 hex digits (122 random bits).
pub fn generate_secret(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);

    let mut file = options
        .open(path)
        .with_context(|| format!("while writing the admin token to {}", path.display()))?;
    writeln!(file, "{secret}").context("while writing the admin token")?;
    Ok(())
}

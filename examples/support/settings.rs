//! The example server's settings from its environment: the key store, the
//! peppers, the admin token and the rest of the table in `server.rs`. Each
//! function answers a message naming the variable when its value is unusable
//! (the server then does not start); none ever prints a secret.

use std::path::Path;

use tower_api_keys::{
    KeyPair, KeyPrefix, PepperRing, PepperSource, TrustedProxies,
    router::ScanningKeys,
    store::{ApiKeyRepository, ConnectError, PoolMode, SeaOrmRepository, redact_url},
};

const PEPPER_FILE: &str = "api-keys.pepper";
/// Shortest `ADMIN_TOKEN` accepted, in bytes.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The key store: `DATABASE_URL` reached as `DATABASE_POOL_MODE` says, with
/// `FEED_DATABASE_URL` and `READ_DATABASE_URL` when given (see "Deployment
/// topologies" in the README).
pub(crate) async fn repository(database_url: &str) -> Result<SeaOrmRepository, String> {
    let mode: PoolMode = env_or("DATABASE_POOL_MODE", "session")?
        .parse()
        .map_err(|err| format!("DATABASE_POOL_MODE: {err}"))?;
    let feed_url = env_or("FEED_DATABASE_URL", "")?;
    let read_url = env_or("READ_DATABASE_URL", "")?;
    let mut builder = SeaOrmRepository::builder(database_url).with_pool_mode(mode);
    if !feed_url.is_empty() {
        builder = builder.with_feed_url(&feed_url);
    }
    if !read_url.is_empty() {
        builder = builder.with_read_replica(&read_url);
    }
    let shown_url = redact_url(database_url);
    let repo = builder.connect().await.map_err(|err| {
        let message = match &err {
            ConnectError::ReadOnly => format!(
                "DATABASE_URL ({shown_url}) names a read-only server (a standby or a read \
                 replica): DATABASE_URL must name the primary (a standby can be given as \
                 READ_DATABASE_URL)"
            ),
            ConnectError::MissingFeature { feature, .. } => {
                format!("{err} (cargo run --example server --features {feature})")
            }
            _ => format!("cannot open the key store at {shown_url}: {err}"),
        };
        // Driver errors may quote a URL, password included.
        [database_url, &feed_url, &read_url]
            .into_iter()
            .filter(|url| !url.is_empty())
            .fold(message, |message, url| {
                message.replace(url, &redact_url(url))
            })
    })?;
    tracing::info!(
        database = %shown_url,
        pool_mode = %mode,
        feed = ?repo.change_source().map(|source| source.mode()),
        read_replica = !read_url.is_empty(),
        "key store ready"
    );
    Ok(repo)
}

/// `API_KEY_PREFIX`: `None` when unset or empty, an error (the server does
/// not start) when it is not a valid key prefix.
pub(crate) fn key_prefix() -> Result<Option<KeyPrefix>, String> {
    let text = env_or("API_KEY_PREFIX", "")?;
    if text.is_empty() {
        return Ok(None);
    }
    KeyPrefix::new(&text)
        .map(Some)
        .map_err(|err| format!("API_KEY_PREFIX: {err}"))
}

/// `TRUSTED_PROXIES`: `None` when unset or empty, an error (the server does
/// not start) when an entry is not a CIDR or an address.
pub(crate) fn trusted_proxies() -> Result<Option<TrustedProxies>, String> {
    let text = env_or("TRUSTED_PROXIES", "")?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|err| format!("TRUSTED_PROXIES: {err}"))
}

/// `name` from the environment, or `default` when it is unset.
pub(crate) fn env_or(name: &str, default: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Ok(default.to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

/// `API_KEY_PEPPER`, or the pepper kept in (or first generated into)
/// `api-keys.pepper`, as the current pepper; `API_KEY_PREVIOUS_PEPPERS`
/// (comma-separated, newest first) as the previous ones during a rotation.
pub(crate) fn peppers() -> Result<PepperRing, String> {
    let (ring, source) = PepperRing::from_env_or_file(
        "API_KEY_PEPPER",
        "API_KEY_PREVIOUS_PEPPERS",
        Path::new(PEPPER_FILE),
    )
    .map_err(|err| format!("cannot load the pepper: {err}"))?;
    match source {
        PepperSource::Environment => {}
        PepperSource::Generated => tracing::info!(
            "API_KEY_PEPPER not set: generated a new pepper and saved it to {PEPPER_FILE} \
             (mode 0600); keep that file, keys cannot be validated without it"
        ),
        PepperSource::File => {
            tracing::info!("API_KEY_PEPPER not set: loaded the pepper from {PEPPER_FILE}")
        }
    }
    let ids: Vec<String> = ring.ids().map(ToString::to_string).collect();
    tracing::info!(
        current = %ring.current_id(),
        legacy = %ring.legacy_id(),
        peppers = ids.len(),
        "peppers loaded (ids only)"
    );
    Ok(ring)
}

/// GitHub's secret-scanning public keys from the file `GITHUB_SCANNING_KEYS_FILE`
/// names, if set; a file that cannot be read or used stops the start.
pub(crate) fn scanning_keys() -> Result<Option<ScanningKeys>, String> {
    let Some(path) = std::env::var_os("GITHUB_SCANNING_KEYS_FILE") else {
        return Ok(None);
    };
    let keys = ScanningKeys::from_file(&path)
        .map_err(|err| format!("GITHUB_SCANNING_KEYS_FILE: {err}"))?;
    let ids: Vec<&str> = keys.identifiers().collect();
    tracing::info!(
        keys = ids.len(),
        key_identifiers = ?ids,
        "GitHub secret-scanning reports accepted at POST /v1/secret-scanning/github"
    );
    Ok(Some(keys))
}

/// `MAX_KEYS_PER_ACCOUNT` (a positive integer), or the crate's default.
pub(crate) fn max_keys_per_account() -> Result<u64, String> {
    let default = tower_api_keys::limits::DEFAULT_MAX_KEYS_PER_ACCOUNT.to_string();
    let text = env_or("MAX_KEYS_PER_ACCOUNT", &default)?;
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|max| *max > 0)
        .ok_or_else(|| format!("MAX_KEYS_PER_ACCOUNT={text:?} is not a positive integer"))
}

/// `ADMIN_TOKEN`, or a random one; the second value is the token if it was generated.
pub(crate) fn admin_token() -> Result<(String, Option<String>), String> {
    match std::env::var("ADMIN_TOKEN") {
        Ok(token) if token.trim().is_empty() => {
            Err("ADMIN_TOKEN is set but empty; unset it to get a generated one".to_owned())
        }
        Ok(token) if token.contains(char::is_whitespace) => {
            Err("ADMIN_TOKEN must not contain whitespace".to_owned())
        }
        Ok(token) if token.len() < MIN_ADMIN_TOKEN_LEN => Err(format!(
            "ADMIN_TOKEN is {} bytes long; it must be at least {MIN_ADMIN_TOKEN_LEN} bytes \
             (unset it to get a generated one)",
            token.len()
        )),
        Ok(token) => Ok((token, None)),
        Err(std::env::VarError::NotUnicode(_)) => Err("ADMIN_TOKEN is not valid UTF-8".to_owned()),
        Err(std::env::VarError::NotPresent) => {
            // 32 characters from the OS CSPRNG, about 190 bits.
            let pair = KeyPair::generate()
                .map_err(|err| format!("cannot generate an admin token: {err}"))?;
            let token = pair.secret_key.expose()["sk_".len()..].to_owned();
            Ok((token.clone(), Some(token)))
        }
    }
}

//! Configuration from the environment: the peppers and the key prefix.

use std::path::Path;

use tower_api_keys::{KeyPrefix, Pepper, PepperRing, PepperSource};

use crate::error::CliError;

/// The current pepper's environment variable.
pub(crate) const PEPPER_VAR: &str = "API_KEY_PEPPER";
/// The previous peppers' environment variable (comma-separated, newest first).
pub(crate) const PREVIOUS_PEPPERS_VAR: &str = "API_KEY_PREVIOUS_PEPPERS";
/// The key prefix's environment variable (the token form `P_…`).
pub(crate) const PREFIX_VAR: &str = "API_KEY_PREFIX";
/// The pepper file read when `API_KEY_PEPPER` is unset, in the working directory.
pub(crate) const PEPPER_FILE: &str = "api-keys.pepper";

/// Whether a command needs the configured peppers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PepperNeed {
    /// It hashes secrets, or reports on the ring: the configured peppers or a
    /// usage error.
    Configured,
    /// It neither hashes nor reads the ring: the configured peppers if they
    /// load, else a random pepper that is used for nothing and never stored.
    None,
}

/// The pepper ring for a command. Never creates a pepper file.
pub(crate) fn peppers(need: PepperNeed) -> Result<PepperRing, CliError> {
    let path = Path::new(PEPPER_FILE);
    // An unreadable directory counts as "configured": loading then says why.
    let configured = std::env::var_os(PEPPER_VAR).is_some() || path.try_exists().unwrap_or(true);
    if configured {
        match PepperRing::from_env_or_file(PEPPER_VAR, PREVIOUS_PEPPERS_VAR, path) {
            Ok((ring, source)) => {
                let from = match source {
                    PepperSource::Environment => PEPPER_VAR,
                    PepperSource::File | PepperSource::Generated => PEPPER_FILE,
                };
                tracing::debug!(from, current = %ring.current_id(), "peppers loaded (ids only)");
                return Ok(ring);
            }
            Err(err) if need == PepperNeed::Configured => {
                return Err(CliError::usage(format!("cannot load the pepper: {err}")));
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot load the pepper; this command does not need it");
            }
        }
    } else if need == PepperNeed::Configured {
        return Err(CliError::usage(format!(
            "no pepper configured: set {PEPPER_VAR} (and {PREVIOUS_PEPPERS_VAR} during a \
             rotation), or run where {PEPPER_FILE} is; this tool never creates a pepper"
        )));
    }
    let ephemeral = Pepper::generate()
        .map_err(|err| CliError::unavailable(format!("cannot generate a pepper: {err}")))?;
    Ok(PepperRing::new(ephemeral))
}

/// The key prefix from `API_KEY_PREFIX`: `None` when unset or empty, a usage
/// error (exit 1) when it is not `[a-z][a-z0-9]{1,15}`.
pub(crate) fn key_prefix() -> Result<Option<KeyPrefix>, CliError> {
    match std::env::var(PREFIX_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(text) if text.is_empty() => Ok(None),
        Ok(text) => KeyPrefix::new(&text)
            .map(Some)
            .map_err(|err| CliError::usage(format!("{PREFIX_VAR}: {err}"))),
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::usage(format!(
            "{PREFIX_VAR}: {}",
            tower_api_keys::key::InvalidKeyPrefix
        ))),
    }
}

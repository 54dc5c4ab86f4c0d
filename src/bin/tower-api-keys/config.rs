//! Configuration from the environment: the peppers.

use std::path::Path;

use tower_api_keys::{Pepper, PepperRing, PepperSource};

use crate::error::CliError;

/// The current pepper's environment variable.
pub(crate) const PEPPER_VAR: &str = "API_KEY_PEPPER";
/// The previous peppers' environment variable (comma-separated, newest first).
pub(crate) const PREVIOUS_PEPPERS_VAR: &str = "API_KEY_PREVIOUS_PEPPERS";
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

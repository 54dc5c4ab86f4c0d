//! Configuration from the environment: the peppers, and what of the database
//! URL must never be printed.

use std::path::Path;

use tower_api_keys::{Pepper, PepperRing, PepperSource, store::redact_url};

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

/// What of `url` an error message must not show, each with its replacement:
/// the whole URL (shown redacted), the password of its authority (as written
/// and percent-decoded), and the values of query parameters that may hold a
/// secret.
pub(crate) fn url_secrets(url: &str) -> Vec<(String, String)> {
    const HIDDEN: &str = "***";
    let mut hide = vec![(url.to_owned(), redact_url(url))];
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        hide.push((password.to_owned(), HIDDEN.to_owned()));
        hide.push((percent_decode(password), HIDDEN.to_owned()));
    }
    for pair in query.split('&') {
        if let Some((name, value)) = pair.split_once('=') {
            let name = name.to_ascii_lowercase();
            if ["pass", "secret", "token"].iter().any(|s| name.contains(s)) {
                hide.push((value.to_owned(), HIDDEN.to_owned()));
                hide.push((percent_decode(value), HIDDEN.to_owned()));
            }
        }
    }
    hide.retain(|(secret, _)| !secret.is_empty());
    hide
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_secrets_cover_the_password_and_secret_parameters() {
        let hide = url_secrets("postgres://app:p%40ss@db:5432/keys?sslpassword=s3cr3t&x=1");
        let secrets: Vec<&str> = hide.iter().map(|(s, _)| s.as_str()).collect();
        assert!(secrets.contains(&"p%40ss"));
        assert!(secrets.contains(&"p@ss"));
        assert!(secrets.contains(&"s3cr3t"));
        assert!(!secrets.contains(&"1"));
        assert_eq!(hide[0].1, "postgres://***@db:5432/keys?sslpassword=***&x=1");
        assert_eq!(url_secrets("sqlite://api-keys.db").len(), 1);
    }

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%41%zz%4"), "aA%zz%4");
        assert_eq!(percent_decode("%"), "%");
    }
}

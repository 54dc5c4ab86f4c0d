//! Failures of a command: the exit status and the one line printed on stderr.

use std::process::ExitCode;

use tower_api_keys::{
    ManagerError,
    store::{StoreError, redact_secrets},
};

/// Why a command failed, which decides its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A usage or validation error (exit 1).
    Usage,
    /// No such key (exit 2).
    NotFound,
    /// The key store cannot be reached or failed (exit 3).
    Unavailable,
}

/// A failed command.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) kind: Kind,
    message: String,
    /// Whether the message was written without any part of the database
    /// URL, so that redacting it would only garble it (a URL that is no URL,
    /// `x` say, would have every `x` of the text replaced).
    holds_no_url: bool,
}

impl CliError {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }

    /// A usage error whose message quotes nothing of the database URL.
    pub(crate) fn usage_without_url(message: impl Into<String>) -> Self {
        Self {
            holds_no_url: true,
            ..Self::usage(message)
        }
    }

    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            holds_no_url: false,
        }
    }

    /// The exit status of this failure.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self.kind {
            Kind::Usage => 1,
            Kind::NotFound => 2,
            Kind::Unavailable => 3,
        })
    }

    /// The message on one line, without any secret of `database_url` (the
    /// URL itself redacted, its password in any form hidden).
    pub(crate) fn line(&self, database_url: Option<&str>) -> String {
        one_line(&self.message, database_url.filter(|_| !self.holds_no_url))
    }
}

impl From<ManagerError> for CliError {
    fn from(err: ManagerError) -> Self {
        let kind = match &err {
            ManagerError::NotFound => Kind::NotFound,
            ManagerError::NotActive
            | ManagerError::AlreadyRotated
            | ManagerError::ScopesNotHeld
            | ManagerError::TooManyKeys { .. }
            | ManagerError::Invalid(_)
            | ManagerError::Store(StoreError::Conflict) => Kind::Usage,
            // Unavailable, the OS random source, any other store failure:
            // worth retrying later.
            _ => Kind::Unavailable,
        };
        Self::new(kind, err.to_string())
    }
}

impl From<StoreError> for CliError {
    fn from(err: StoreError) -> Self {
        ManagerError::Store(err).into()
    }
}

/// `text` on one line (control characters, line breaks included, become
/// spaces), without any secret of `database_url`.
pub(crate) fn one_line(text: &str, database_url: Option<&str>) -> String {
    let text = match database_url {
        // An empty URL has no secret, and replacing "" would garble the text.
        Some(url) if !url.trim().is_empty() => redact_secrets(text, url),
        _ => text.to_owned(),
    };
    let mut line = String::with_capacity(text.len());
    let mut last_space = false;
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        line.push(c);
    }
    line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_fit_one_line_and_hide_secrets() {
        assert_eq!(
            one_line(
                "cannot open postgres://u:pw@h/db:\nbad\tpw  x",
                Some("postgres://u:pw@h/db")
            ),
            "cannot open postgres://***@h/db: bad *** x"
        );
    }

    #[test]
    fn an_empty_or_odd_url_leaves_the_message_readable() {
        assert_eq!(one_line("cannot open x", Some("")), "cannot open x");
        assert_eq!(
            CliError::usage_without_url("expected sqlite://…").line(Some("x")),
            "expected sqlite://…"
        );
        assert_eq!(CliError::usage("x").line(Some("x")), "<not a URL>");
    }

    #[test]
    fn manager_errors_map_to_exit_kinds() {
        let kind = |err| CliError::from(err).kind;
        assert_eq!(kind(ManagerError::NotFound), Kind::NotFound);
        assert_eq!(kind(ManagerError::NotActive), Kind::Usage);
        assert_eq!(kind(ManagerError::Store(StoreError::Conflict)), Kind::Usage);
        assert_eq!(kind(ManagerError::Unavailable), Kind::Unavailable);
        assert_eq!(
            kind(ManagerError::Store(StoreError::Timeout(
                std::time::Duration::from_secs(1)
            ))),
            Kind::Unavailable
        );
    }
}

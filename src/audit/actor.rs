//! Who made a change: the [`Actor`] request extension.

use uuid::Uuid;

/// The most characters an [`Actor`] keeps.
pub const MAX_ACTOR_CHARS: usize = 128;

/// Who made a change, as the audit log records it (`actor`): the host's
/// authentication inserts it as a request extension (for example
/// `user:42`); the crate itself uses `key:<key_id>` for an API key acting
/// through the management API, `holder` for a revocation by the key holder,
/// `github` for a leak report and `cli` for the command-line tool.
///
/// At most [`MAX_ACTOR_CHARS`] characters are kept (cut on a character
/// boundary), and control characters are escaped (`\n`, `\u{1b}`), so that
/// the text cannot forge lines in a log or a terminal.
///
/// ```
/// use tower_api_keys::audit::Actor;
///
/// let actor = Actor::new("user:42\n");
/// assert_eq!(actor.as_str(), "user:42\\n");
/// assert_eq!(Actor::new("x".repeat(300)).as_str().chars().count(), 128);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor(String);

impl Actor {
    /// An actor named by `name`, cut and escaped as described above.
    pub fn new(name: impl AsRef<str>) -> Self {
        let mut text = String::new();
        let mut chars = 0;
        for c in name.as_ref().chars() {
            let piece: String = if c.is_control() {
                c.escape_debug().collect()
            } else {
                c.to_string()
            };
            let len = piece.chars().count();
            if chars + len > MAX_ACTOR_CHARS {
                break;
            }
            chars += len;
            text.push_str(&piece);
        }
        Self(text)
    }

    /// `key:<key_id>`: an API key acting through the management API.
    pub fn key(key_id: Uuid) -> Self {
        Self(format!("key:{key_id}"))
    }

    /// `holder`: the key's holder revoking it (`POST /v1/api-keys/revocations`).
    pub fn holder() -> Self {
        Self("holder".to_owned())
    }

    /// `github`: a leak report from GitHub's secret scanning.
    pub fn github() -> Self {
        Self("github".to_owned())
    }

    /// `cli`: the command-line tool `tower-api-keys`.
    pub fn cli() -> Self {
        Self("cli".to_owned())
    }

    /// The text stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let actor = Actor::new("é".repeat(200));
        assert_eq!(actor.as_str().chars().count(), MAX_ACTOR_CHARS);
        assert!(actor.as_str().chars().all(|c| c == 'é'));
    }

    #[test]
    fn control_characters_are_escaped_whole() {
        assert_eq!(Actor::new("a\u{1b}[31mb").as_str(), "a\\u{1b}[31mb");
        assert_eq!(Actor::new("a\r\nb\0").as_str(), "a\\r\\nb\\0");
        // An escape that would cross the limit is left out, not cut in half.
        let actor = Actor::new(format!("{}\n", "x".repeat(127)));
        assert_eq!(actor.as_str(), "x".repeat(127));
    }
}

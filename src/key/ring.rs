//! Pepper rotation: the ring of peppers a validator knows, and which pepper
//! made each stored hash.
//!
//! Every stored hash records the pepper that made it in the `pepper_id` column;
//! a row without one (every row of the reference service) was made with the
//! *legacy* pepper, the oldest one in the ring. A key whose hash was made with
//! a previous pepper validates with exactly that pepper (one HMAC), and after
//! its first successful validation its hash is rewritten under the current
//! pepper by the batched writer. New keys are always hashed with the current
//! pepper.

use std::{fmt, str::FromStr};

use hmac::{Hmac, Mac, digest::KeyInit};
use sha2::Sha256;

use super::{
    hash::{KeyHasher, SecretHash},
    pepper::{Pepper, PepperFileError, PepperSource},
};

/// Longest pepper id the `pepper_id` column holds.
pub const MAX_PEPPER_ID_LEN: usize = 32;

/// What a pepper's id is derived from, under the pepper as HMAC key.
const ID_MESSAGE: &[u8] = b"tower-api-keys pepper id v1";

/// The id of a pepper, as stored in `pepper_id`: the first 16 hex characters
/// (64 bits) of `HMAC-SHA256(key = pepper, msg = "tower-api-keys pepper id v1")`.
///
/// It is derived from the pepper, so a configuration that lacks a pepper some
/// rows still name is noticed, but it neither contains the pepper nor lets it be
/// computed back. Like any stored hash of a key an attacker owns, it lets a
/// holder of the table test guesses of a *weak* pepper: peppers must be random.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct PepperId(Box<str>);

impl PepperId {
    /// The id of `pepper`.
    pub fn of(pepper: &Pepper) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(pepper.expose())
            .expect("HMAC accepts keys of any length");
        mac.update(ID_MESSAGE);
        let digest = mac.finalize().into_bytes();
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let id: String = digest[..8]
            .iter()
            .flat_map(|byte| {
                [
                    char::from(DIGITS[usize::from(byte >> 4)]),
                    char::from(DIGITS[usize::from(byte & 0x0f)]),
                ]
            })
            .collect();
        Self(id.into())
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `pepper_id` value that cannot be one: empty, longer than
/// [`MAX_PEPPER_ID_LEN`], or not printable ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a pepper id is 1 to {MAX_PEPPER_ID_LEN} printable ASCII characters")]
pub struct InvalidPepperId;

impl FromStr for PepperId {
    type Err = InvalidPepperId;

    /// Reads an id as stored (for ids of peppers this process does not hold,
    /// such as one named on the command line).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty()
            || text.len() > MAX_PEPPER_ID_LEN
            || !text.bytes().all(|byte| byte.is_ascii_graphic())
        {
            return Err(InvalidPepperId);
        }
        Ok(Self(text.into()))
    }
}

impl fmt::Display for PepperId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PepperId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PepperId({})", self.0)
    }
}

/// The peppers a validator knows: the current one, which hashes every new key
/// and every re-hashed one, and any number of previous ones, newest first. The
/// oldest (the last added; the current one when there is no other) is the
/// *legacy* pepper, which rows without a `pepper_id` were made with.
///
/// ```
/// use tower_api_keys::{Pepper, PepperRing};
///
/// let old = Pepper::try_from("the-pepper-every-key-has-today")?;
/// let new = Pepper::generate()?;
/// let ring = PepperRing::new(new).with_previous(old.clone());
/// assert_eq!(ring.legacy_id(), &tower_api_keys::PepperId::of(&old));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PepperRing {
    /// Newest first: `[0]` is the current pepper, the last one the legacy pepper.
    peppers: Vec<(PepperId, Pepper)>,
}

impl PepperRing {
    /// A ring of one pepper: current and legacy at once.
    pub fn new(current: Pepper) -> Self {
        Self {
            peppers: vec![(PepperId::of(&current), current)],
        }
    }

    /// Adds a previous pepper, older than every pepper already in the ring (so
    /// add them newest first); it becomes the legacy pepper. A pepper already in
    /// the ring is ignored.
    #[must_use]
    pub fn with_previous(mut self, pepper: Pepper) -> Self {
        let id = PepperId::of(&pepper);
        if !self.peppers.iter().any(|(known, _)| *known == id) {
            self.peppers.push((id, pepper));
        }
        self
    }

    /// The pepper new hashes are made with.
    pub fn current(&self) -> &Pepper {
        &self.peppers[0].1
    }

    /// The current pepper's id.
    pub fn current_id(&self) -> &PepperId {
        &self.peppers[0].0
    }

    /// The legacy pepper's id: rows without a `pepper_id` were made with it.
    pub fn legacy_id(&self) -> &PepperId {
        &self.peppers[self.peppers.len() - 1].0
    }

    /// Every pepper id, newest first.
    pub fn ids(&self) -> impl Iterator<Item = &PepperId> {
        self.peppers.iter().map(|(id, _)| id)
    }

    /// Whether the ring holds the pepper with this id.
    pub fn contains(&self, id: &PepperId) -> bool {
        self.peppers.iter().any(|(known, _)| known == id)
    }

    /// The ring from the environment, as the example server and the CLI read
    /// it: the current pepper from `current_var` or else the pepper file at
    /// `path` (see [`Pepper::from_env_or_file`]), and previous ones from
    /// `previous_var`, comma-separated, newest first (blank entries ignored).
    pub fn from_env_or_file(
        current_var: &str,
        previous_var: &str,
        path: &std::path::Path,
    ) -> Result<(Self, PepperSource), PepperFileError> {
        let (current, source) = Pepper::from_env_or_file(current_var, path)?;
        let mut ring = Self::new(current);
        match std::env::var(previous_var) {
            Ok(list) => {
                for text in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let pepper = Pepper::try_from(text)
                        .map_err(|err| PepperFileError::Env(previous_var.to_owned(), err))?;
                    ring = ring.with_previous(pepper);
                }
            }
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(PepperFileError::EnvNotUtf8(previous_var.to_owned()));
            }
        }
        Ok((ring, source))
    }
}

impl From<Pepper> for PepperRing {
    fn from(pepper: Pepper) -> Self {
        Self::new(pepper)
    }
}

impl fmt::Debug for PepperRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PepperRing")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

/// A keyed HMAC per pepper of a ring, in the ring's order.
pub(crate) struct Hashers {
    hashers: Vec<(PepperId, KeyHasher)>,
}

impl Hashers {
    pub(crate) fn new(ring: &PepperRing) -> Self {
        Self {
            hashers: ring
                .peppers
                .iter()
                .map(|(id, pepper)| (id.clone(), KeyHasher::new(pepper)))
                .collect(),
        }
    }

    /// The current pepper's hasher (index 0).
    pub(crate) fn current(&self) -> &KeyHasher {
        &self.hashers[0].1
    }

    pub(crate) fn current_id(&self) -> &PepperId {
        &self.hashers[0].0
    }

    /// The index of the pepper a row names (`None`: the legacy pepper), or
    /// `None` when the ring does not hold it.
    pub(crate) fn index_of(&self, pepper_id: Option<&str>) -> Option<usize> {
        match pepper_id {
            None => Some(self.hashers.len() - 1),
            Some(id) => self
                .hashers
                .iter()
                .position(|(known, _)| known.as_str() == id),
        }
    }

    /// The hasher at `index` (from [`Self::index_of`]).
    pub(crate) fn get(&self, index: usize) -> &KeyHasher {
        &self.hashers[index].1
    }

    pub(crate) fn ring_ids(&self) -> impl Iterator<Item = &PepperId> {
        self.hashers.iter().map(|(id, _)| id)
    }

    /// Whether `secret` matches `stored`, made with the pepper at `pepper`:
    /// exactly one HMAC, with that pepper, whatever the outcome. Without a
    /// known pepper or a readable hash, the secret is compared with `dummy`
    /// under the current pepper (the same work) and never matches.
    pub(crate) fn verify(
        &self,
        secret: &str,
        pepper: Option<usize>,
        stored: Option<&SecretHash>,
        dummy: &SecretHash,
    ) -> bool {
        match (pepper, stored) {
            (Some(index), Some(stored)) => self.get(index).verify(secret, stored),
            _ => {
                self.current().verify(secret, dummy);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pepper(text: &str) -> Pepper {
        Pepper::try_from(text).unwrap()
    }

    #[test]
    fn ids_are_16_hex_characters_stable_and_distinct() {
        let a = PepperId::of(&pepper("a-pepper-of-at-least-16-bytes"));
        assert_eq!(a, PepperId::of(&pepper("a-pepper-of-at-least-16-bytes")));
        assert_ne!(a, PepperId::of(&pepper("another-pepper-of-16-bytes")));
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!a.as_str().contains("pepper"));
    }

    #[test]
    fn the_oldest_pepper_is_legacy_and_duplicates_are_ignored() {
        let (new, mid, old) = (
            pepper("the-newest-pepper-0000"),
            pepper("the-middle-pepper-0000"),
            pepper("the-oldest-pepper-0000"),
        );
        let single = PepperRing::new(old.clone());
        assert_eq!(single.current_id(), single.legacy_id());
        let ring = PepperRing::new(new.clone())
            .with_previous(mid.clone())
            .with_previous(new.clone())
            .with_previous(old.clone());
        assert_eq!(ring.ids().count(), 3);
        assert_eq!(ring.current_id(), &PepperId::of(&new));
        assert_eq!(ring.legacy_id(), &PepperId::of(&old));
        let hashers = Hashers::new(&ring);
        assert_eq!(hashers.index_of(None), Some(2));
        assert_eq!(hashers.index_of(Some(PepperId::of(&mid).as_str())), Some(1));
        assert_eq!(hashers.index_of(Some("0123456789abcdef")), None);
        assert!(!format!("{ring:?}").contains("pepper-0000"));
    }

    #[test]
    fn stored_ids_are_read_within_the_columns_bounds() {
        assert!("0123456789abcdef".parse::<PepperId>().is_ok());
        assert!("".parse::<PepperId>().is_err());
        assert!("x".repeat(33).parse::<PepperId>().is_err());
        assert!("with space".parse::<PepperId>().is_err());
    }
}

//! The audit log and the lifecycle events a change writes (CONTRACT §16).
//!
//! Every change to a key (create, import, update, rotate, revoke, delete)
//! writes, in the same transaction as the change itself, one row per key to
//! the table `tower_api_keys_audit` and (except for an import) one event per
//! key to the outbox `tower_api_keys_outbox`, from which events are delivered
//! after commit. What a change records — who made it, from where, and why —
//! travels to the store as one [`ChangeRecord`]; the store derives the rest
//! (the action, its detail, the event) from the rows it changes, so that the
//! audit row always describes what was committed.
//!
//! By concern: who acted (`actor`), the rows a change writes (`journal`),
//! the tables' SeaORM entities (`entity`, feature `sql`).

mod actor;
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
pub mod entity;
pub(crate) mod journal;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::actor::{Actor, MAX_ACTOR_CHARS};

/// Why a key changed, beyond who changed it: the audit action and the
/// event's `reason` for a revocation, and whether an insert is a creation or
/// an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChangeReason {
    /// The key's owner (through the management API, the CLI or an API key):
    /// inserts are `created`, a revocation is `revoked` (reason `owner`).
    #[default]
    Owner,
    /// The key's holder presented the credential (§8.4): `revoked_by_holder`
    /// (reason `holder`).
    Holder,
    /// A secret scanner reported the key leaked (§14.2): `revoked_leaked`
    /// (reason `leaked`), with the report's `url`.
    Leaked {
        /// Where the key was found, as the report says.
        url: Option<String>,
    },
    /// An operator's import: inserts are `imported`, and emit no events.
    Import,
}

/// What a change records beside the change itself: who made it, from which
/// address, and why. Passed to each writing method of
/// [`ApiKeyRepository`](crate::store::ApiKeyRepository), which writes the
/// audit row and the outbox event in the change's own transaction.
///
/// ```
/// use tower_api_keys::audit::{Actor, ChangeRecord};
///
/// let change = ChangeRecord::by(Actor::new("user:42")).from("203.0.113.7".parse().ok());
/// assert_eq!(change.actor.as_ref().map(Actor::as_str), Some("user:42"));
/// assert_eq!(ChangeRecord::default().actor, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Who made the change; `None` when the host inserted no [`Actor`].
    pub actor: Option<Actor>,
    /// The client's address, when known.
    pub source: Option<IpAddr>,
    /// Why the key changed.
    pub reason: ChangeReason,
}

impl ChangeRecord {
    /// A change made by `actor`, from an unknown address, for the owner.
    pub fn by(actor: Actor) -> Self {
        Self {
            actor: Some(actor),
            ..Self::default()
        }
    }

    /// The same change made from `source`.
    #[must_use]
    pub fn from(self, source: Option<IpAddr>) -> Self {
        Self { source, ..self }
    }

    /// The same change for `reason`.
    #[must_use]
    pub fn because(self, reason: ChangeReason) -> Self {
        Self { reason, ..self }
    }
}

/// One row of the audit log, as [`ApiKeyRepository::audit`](crate::store::ApiKeyRepository::audit)
/// reads it. Serializes as the audit API's entries (the account is left out:
/// the API is scoped to it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Increasing id; the cursor of the next page.
    pub id: i64,
    /// When the change committed (UTC).
    pub at: DateTime<Utc>,
    /// The account that owns the key.
    #[serde(skip)]
    pub account_id: Uuid,
    /// The key.
    pub key_id: Uuid,
    /// `created`, `imported`, `updated`, `rotated`, `revoked`,
    /// `revoked_by_holder`, `revoked_leaked` or `deleted`.
    pub action: String,
    /// Who made the change, if known.
    pub actor: Option<String>,
    /// The client's address, if known.
    pub source: Option<String>,
    /// The action's detail (changed fields, successor, report URL), if any.
    pub detail: Option<serde_json::Value>,
}

/// Which audit rows to read: newest first, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this account's rows; `None`: every account (the CLI).
    pub account_id: Option<Uuid>,
    /// Only this key's rows.
    pub key_id: Option<Uuid>,
    /// Only rows with an `id` below this one (the next page).
    pub before: Option<i64>,
    /// At most this many rows.
    pub limit: u32,
}

impl AuditQuery {
    /// Whether `entry` is one of the rows asked for (ignoring `limit`).
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.account_id.is_none_or(|id| id == entry.account_id)
            && self.key_id.is_none_or(|id| id == entry.key_id)
            && self.before.is_none_or(|before| entry.id < before)
    }
}

/// The most rows one audit page holds, and the default.
pub const MAX_AUDIT_LIMIT: u32 = 500;
/// Rows per audit page when the query names no limit.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;

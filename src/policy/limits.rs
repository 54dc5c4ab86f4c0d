//! Limits on what a key may carry, as the contract fixes them.

/// Longest title, in Unicode scalar values (after trimming).
pub const MAX_TITLE_CHARS: usize = 255;
/// Longest description, in Unicode scalar values.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
/// Allowed range of `expires_in_days`.
pub const EXPIRES_IN_DAYS: std::ops::RangeInclusive<i64> = 1..=365;
/// Shortest pepper accepted, in bytes.
pub const MIN_PEPPER_LEN: usize = 16;
/// Longest grace period of a rotation, in seconds (7 days).
pub const MAX_GRACE_PERIOD_SECONDS: u64 = 604_800;
/// Most keys one account may have by default; see
/// [`KeyManager::with_max_keys_per_account`](crate::KeyManager::with_max_keys_per_account).
pub const DEFAULT_MAX_KEYS_PER_ACCOUNT: u64 = 1_000;

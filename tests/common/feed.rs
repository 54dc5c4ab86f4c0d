//! Replicas following the change feed, and waiting for what they see.

use std::time::{Duration, Instant};

use tower_api_keys::{ApiKeyValidator, Rejection, store::SeaOrmRepository};

/// Generous: the bounds themselves are measured by `benches/propagation.rs`.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A validator on `repository`, polling every `poll` where it polls, once
/// its feed is connected.
pub async fn replica(repository: SeaOrmRepository, poll: Duration) -> ApiKeyValidator {
    connected(
        ApiKeyValidator::builder(repository, super::pepper())
            .with_change_poll_interval(poll)
            .build(),
    )
    .await
}

/// `validator`, once its feed is connected.
pub async fn connected(validator: ApiKeyValidator) -> ApiKeyValidator {
    let started = Instant::now();
    while !validator.change_feed().is_some_and(|feed| feed.connected) {
        assert!(
            started.elapsed() < DEADLINE,
            "the change feed did not connect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    validator
}

/// Waits until `validator` refuses `credential` (or accepts it, with
/// `accepted`), failing after [`DEADLINE`].
pub async fn eventually(validator: &ApiKeyValidator, credential: &str, accepted: bool, what: &str) {
    if let Err(waited) = within(validator, credential, accepted, DEADLINE).await {
        panic!("{what}: not seen within {waited:?}");
    }
}

/// Waits up to `deadline` until `validator` refuses `credential` as invalid
/// (or accepts it, with `accepted`); how long it took.
pub async fn within(
    validator: &ApiKeyValidator,
    credential: &str,
    accepted: bool,
    deadline: Duration,
) -> Result<Duration, Duration> {
    let started = Instant::now();
    loop {
        let result = validator.validate(credential).await;
        let done = if accepted {
            result.is_ok()
        } else {
            result == Err(Rejection::InvalidCredential)
        };
        if done {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= deadline {
            return Err(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the feed of `validator` has reported at least `events`
/// changes (so that a key cached afterwards is not evicted by its own
/// insert's event).
pub async fn seen_events(validator: &ApiKeyValidator, events: u64) {
    let started = Instant::now();
    while validator
        .change_feed()
        .is_none_or(|feed| feed.events < events)
    {
        assert!(
            started.elapsed() < DEADLINE,
            "the feed did not report {events} changes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

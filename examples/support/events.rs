//! The example server's lifecycle events and audit retention: with
//! `WEBHOOK_URL` (and `WEBHOOK_SECRET`, `whsec_…`), a Standard Webhooks sender
//! delivers the outbox's events; `EXPIRY_NOTICE_DAYS` (default 7) sets when
//! `key.expiring` is sent; `WEBHOOK_LEASE_SECONDS` (default 60) how long an
//! event stays with the replica delivering it. Every replica also runs the
//! daily retention (audit rows after 365 days, usage rows after 400), which
//! one replica at a time performs.

use std::time::Duration;

use tower_api_keys::{
    ApiKeyValidator, KeyManager,
    events::{
        EventDispatcher, EventDispatcherHandle,
        webhook::{WebhookSecret, WebhookSender},
    },
};

/// The background work this module starts.
pub struct Running {
    dispatcher: Option<EventDispatcherHandle>,
    retention: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops delivering (undelivered events stay in the outbox) and the retention.
    pub async fn shutdown(self) {
        self.retention.abort();
        if let Some(dispatcher) = self.dispatcher {
            dispatcher.shutdown().await;
        }
    }
}

/// A whole number from the environment, or `default`.
fn number(name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Ok(text) => text
            .trim()
            .parse()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                format!(
                    "{name} must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                )
            }),
        Err(_) => Err(format!("{name} is not valid UTF-8")),
    }
}

/// Reads the settings and starts the webhook sender (if `WEBHOOK_URL` is set)
/// and the retention; a bad setting stops the server at start.
pub fn start(validator: &ApiKeyValidator, manager: &KeyManager) -> Result<Running, String> {
    let notice_days = number("EXPIRY_NOTICE_DAYS", 7, 1..=365)?;
    let lease = number("WEBHOOK_LEASE_SECONDS", 60, 15..=3600)?;
    let dispatcher = match std::env::var("WEBHOOK_URL") {
        Err(std::env::VarError::NotPresent) => None,
        Err(_) => return Err("WEBHOOK_URL is not valid UTF-8".to_owned()),
        Ok(url) => {
            let secret = std::env::var("WEBHOOK_SECRET")
                .map_err(|_| "WEBHOOK_URL is set, so WEBHOOK_SECRET (whsec_…) must be too")?;
            let secret =
                WebhookSecret::parse(&secret).map_err(|err| format!("WEBHOOK_SECRET: {err}"))?;
            let sender =
                WebhookSender::new(&url, secret).map_err(|err| format!("WEBHOOK_URL: {err}"))?;
            tracing::info!("lifecycle events go to WEBHOOK_URL");
            Some(
                EventDispatcher::new(validator, sender)
                    .with_expiry_notice(Duration::from_secs(notice_days * 24 * 60 * 60))
                    .with_lease(Duration::from_secs(lease))
                    .start(),
            )
        }
    };
    let manager = manager.clone();
    let retention = tokio::spawn(async move {
        loop {
            match manager.prune(365, 400).await {
                Ok(Some(pruned)) => tracing::info!(
                    audit_rows = pruned.audit_rows,
                    usage_rows = pruned.usage_rows,
                    "retention: old audit and usage rows deleted"
                ),
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "retention failed"),
            }
            tokio::time::sleep(Duration::from_secs(60 * 60)).await;
        }
    });
    Ok(Running {
        dispatcher,
        retention,
    })
}

//! The Standard Webhooks sender: each event is `POST`ed as JSON with the
//! headers `webhook-id` (the same on every attempt), `webhook-timestamp`
//! and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! under the `whsec_` secret), signed afresh for each attempt.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{DeliveryError, EventSink, OutboxEvent};

/// How long one attempt may take.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// A Standard Webhooks signing secret, `whsec_` then the base64 of 24 to 64
/// random bytes. `Debug` never shows it.
///
/// ```
/// use tower_api_keys::events::webhook::WebhookSecret;
///
/// let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// assert_eq!(format!("{secret:?}"), "WebhookSecret(…)");
/// assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
/// ```
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// Why a webhook secret or URL was refused; never shows the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    /// The secret does not start with `whsec_`.
    #[error("the webhook secret must have the form whsec_<base64>")]
    MissingPrefix,
    /// The part after `whsec_` is not base64.
    #[error("the webhook secret after whsec_ is not valid base64")]
    NotBase64,
    /// The secret has fewer than 24 or more than 64 bytes.
    #[error("the webhook secret must decode to 24 to 64 bytes, not {0}")]
    Length(usize),
    /// The URL is not an absolute `http` or `https` URL.
    #[error("the webhook URL must be an absolute http:// or https:// URL")]
    BadUrl,
    /// The HTTP client could not be built.
    #[error("the webhook HTTP client could not be built")]
    Client,
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, WebhookConfigError> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or(WebhookConfigError::MissingPrefix)?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| WebhookConfigError::NotBase64)?,
        );
        if !(24..=64).contains(&bytes.len()) {
            return Err(WebhookConfigError::Length(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// The `webhook-signature` value of `body` sent as `id` at `timestamp`
    /// (Unix seconds): `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// An [`EventSink`] that `POST`s each event to one URL as Standard Webhooks
/// describes: a 2xx answer delivers it; anything else (another status, a
/// redirect, which is never followed, a timeout of
/// [`WEBHOOK_TIMEOUT`], no connection) has it retried.
///
/// ```
/// use tower_api_keys::events::webhook::{WebhookSecret, WebhookSender};
///
/// let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let sender = WebhookSender::new("https://hooks.example.com/api-keys", secret)?;
/// # Ok::<(), tower_api_keys::events::webhook::WebhookConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct WebhookSender {
    url: reqwest::Url,
    secret: WebhookSecret,
    client: reqwest::Client,
}

impl WebhookSender {
    /// A sender to `url`, signing with `secret`.
    pub fn new(url: &str, secret: WebhookSecret) -> Result<Self, WebhookConfigError> {
        let url = reqwest::Url::parse(url).map_err(|_| WebhookConfigError::BadUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(WebhookConfigError::BadUrl);
        }
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| WebhookConfigError::Client)?;
        Ok(Self {
            url,
            secret,
            client,
        })
    }
}

impl EventSink for WebhookSender {
    async fn deliver(&self, event: &OutboxEvent) -> Result<(), DeliveryError> {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.secret.sign(&event.event_id, timestamp, &event.payload);
        let sent = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &event.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(event.payload.clone())
            .send()
            .await;
        // Never the URL in an error: it may carry a token of the receiver's.
        let response = sent.map_err(|err| {
            DeliveryError(
                if err.is_timeout() {
                    "timed out"
                } else if err.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                }
                .to_owned(),
            )
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(DeliveryError(format!(
                "answered {status} (redirects are not followed)"
            )))
        } else {
            Err(DeliveryError(format!("answered {status}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_specifications_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_and_urls_are_refused_without_showing_the_secret() {
        for (text, expected) in [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                WebhookConfigError::MissingPrefix,
            ),
            ("whsec_not base64!", WebhookConfigError::NotBase64),
            ("whsec_c2hvcnQ=", WebhookConfigError::Length(5)),
        ] {
            let err = WebhookSecret::parse(text).unwrap_err();
            assert_eq!(err, expected);
            assert!(!err.to_string().contains(text.trim_start_matches("whsec_")));
        }
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        for url in ["ftp://x/y", "not a url", "/relative"] {
            assert_eq!(
                WebhookSender::new(url, secret.clone()).unwrap_err(),
                WebhookConfigError::BadUrl
            );
        }
    }
}

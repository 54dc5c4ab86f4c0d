//! A self-service key page (feature `ui`): one small page of its own HTML, CSS
//! and JavaScript over the [management API](crate::router), for the people
//! who own the keys.
//!
//! [`KeysPage`] is an axum [`Router`] the host nests where the page should
//! live (the example server: `GET /keys`). The page lists the account's keys
//! newest first, creates them (the credential shown once, with a copy
//! button), rotates and revokes them (each after a confirmation), and draws
//! each key's last 30 days of usage. It calls the management API at the base
//! path the host gives, on the same origin, so the host's own authentication
//! (its session cookie) applies to every call; nothing is loaded from
//! anywhere else.
//!
//! Every answer carries a strict `Content-Security-Policy` ([`CONTENT_SECURITY_POLICY`]:
//! scripts and styles from the page's own origin only, no inline script, no
//! framing), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//! The page builds its markup with `textContent` only (a key titled
//! `<img src=x onerror=…>` shows as that text), and the policy's Trusted Types
//! directive makes any HTML parsing of a string a script error. No secret is
//! ever written to storage, a cookie or a URL.
//!
//! ```
//! use axum::Router;
//! use tower_api_keys::{ApiKeyValidator, KeyManager, Pepper, router::ManagementRouter, store::MemoryRepository, ui::KeysPage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
//! let app: Router = Router::new()
//!     .nest("/v1/api-keys", ManagementRouter::new(KeyManager::new(validator)).build())
//!     .nest("/keys", KeysPage::new("/v1/api-keys").build());
//! // .layer(your own login), in front of both: the page's calls carry its cookie.
//! # let _ = app;
//! # Ok(()) }
//! ```

use axum::{
    Router,
    extract::{OriginalUri, State},
    http::{HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

/// The page's markup; `{{…}}` placeholders are filled per request.
const HTML: &str = include_str!("assets/keys.html");
/// The page's script.
const SCRIPT: &str = include_str!("assets/keys.js");
/// The page's style sheet.
const STYLE: &str = include_str!("assets/keys.css");

/// The `Content-Security-Policy` of every answer of a [`KeysPage`]: nothing
/// but the page's own script, style sheet and API calls on its own origin, no
/// inline script or style, no plugins, no `<base>`, no form submission, no
/// framing, and no HTML parsed from strings (Trusted Types).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// The self-service key page, as an axum [`Router`] to nest where the page
/// should be served (`GET /` of the router is the page; its script and style
/// sheet sit beside it).
///
/// By default the page makes its API calls with nothing but what the browser
/// adds on its own (the host's session cookie): put the page and the
/// management router behind the same login. [`KeysPage::with_sign_in_form`]
/// makes the page ask for a bearer token and an account id instead, as the
/// example server's stand-in login expects.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, body::Body, http::{Request, StatusCode}};
/// use tower::ServiceExt as _; // `oneshot`
/// use tower_api_keys::ui::KeysPage;
///
/// let app: Router = Router::new().nest("/keys", KeysPage::new("/v1/api-keys").build());
/// let response = app.oneshot(Request::get("/keys").body(Body::empty())?).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// assert!(response.headers()["content-security-policy"].to_str()?.contains("script-src 'self'"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct KeysPage {
    api_base: String,
    sign_in_form: bool,
}

impl KeysPage {
    /// The page over the management API mounted at `api_base` on the same
    /// origin, such as `/v1/api-keys` (a missing leading `/` is added, a
    /// trailing one removed).
    pub fn new(api_base: impl Into<String>) -> Self {
        let api_base = api_base.into();
        let api_base = format!("/{}", api_base.trim_matches('/'));
        Self {
            api_base,
            sign_in_form: false,
        }
    }

    /// Shows a sign-in form asking for a bearer token and an account id,
    /// sent as `Authorization: Bearer <token>` and `X-Account-Id: <uuid>` on
    /// every API call and kept in the page's memory only (a reload forgets
    /// them). Default: **off**, the host's own login (its cookie) applies.
    pub fn with_sign_in_form(mut self, on: bool) -> Self {
        self.sign_in_form = on;
        self
    }

    /// The router: `GET /` the page, `GET /keys.js` and `GET /keys.css` its
    /// assets.
    pub fn build<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let page = Page {
            api_base: escape_attribute(&self.api_base),
            sign_in_form: self.sign_in_form,
            version: version(),
        };
        Router::new()
            .route("/", get(page_html))
            .route(
                "/keys.js",
                get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
            )
            .route("/keys.css", get(|| asset("text/css; charset=utf-8", STYLE)))
            .with_state(std::sync::Arc::new(page))
    }
}

/// What the page's markup is filled with.
struct Page {
    api_base: String,
    sign_in_form: bool,
    /// Asset URLs carry it, so that they can be cached for good.
    version: String,
}

/// The first 16 hex digits of the SHA-256 of the assets.
fn version() -> String {
    let digest = Sha256::new()
        .chain_update(SCRIPT)
        .chain_update(STYLE)
        .finalize();
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

async fn page_html(
    State(page): State<std::sync::Arc<Page>>,
    OriginalUri(uri): OriginalUri,
) -> Response {
    // Assets sit beside the page, wherever the host nested it.
    let here = escape_attribute(uri.path().trim_end_matches('/'));
    let body = HTML
        .replace("{{assets}}", &here)
        .replace("{{version}}", &page.version)
        .replace("{{api_base}}", &page.api_base)
        .replace(
            "{{sign_in}}",
            if page.sign_in_form { "form" } else { "host" },
        );
    respond("text/html; charset=utf-8", "no-store", body)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    // Versioned URLs: a new release changes the URL, not the content behind one.
    respond(content_type, "public, max-age=31536000, immutable", body)
}

fn respond(content_type: &'static str, cache: &'static str, body: impl IntoResponse) -> Response {
    let headers: [(HeaderName, HeaderValue); 7] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}

/// `text` as the value of a double-quoted HTML attribute.
fn escape_attribute(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(app: Router, path: &str) -> (Response, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            Response::from_parts(parts, Body::empty()),
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_page_names_its_assets_beside_it_and_the_api_base_escaped() {
        let app = Router::new().nest(
            "/account/keys",
            KeysPage::new("v1/\"keys\"/")
                .with_sign_in_form(true)
                .build(),
        );
        let (response, html) = get(app.clone(), "/account/keys").await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let version = version();
        assert!(html.contains(&format!(r#"src="/account/keys/keys.js?v={version}""#)));
        assert!(html.contains(&format!(r#"href="/account/keys/keys.css?v={version}""#)));
        assert!(html.contains(r#"content="/v1/&quot;keys&quot;""#), "{html}");
        assert!(html.contains(r#"content="form""#));
        assert!(!html.contains("{{"), "an unfilled placeholder: {html}");
        // No inline script: the one script element loads the file.
        assert_eq!(html.matches("<script").count(), 1);

        let (response, script) = get(app, "/account/keys/keys.js").await;
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(script, SCRIPT);
    }

    #[tokio::test]
    async fn every_answer_carries_the_policy_headers() {
        let app = Router::new().nest("/keys", KeysPage::new("/v1/api-keys").build());
        for path in ["/keys", "/keys/keys.js", "/keys/keys.css"] {
            let (response, _) = get(app.clone(), path).await;
            let headers = response.headers();
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        }
    }

    #[test]
    fn the_assets_are_small_and_parse_no_html_from_strings() {
        assert!(HTML.len() + SCRIPT.len() + STYLE.len() < 100 * 1024);
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "keys.js uses {sink}");
        }
    }
}

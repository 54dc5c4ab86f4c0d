//! The self-service key page (CONTRACT §17) in a real browser: headless
//! Chromium, driven over WebDriver by chromedriver, against the example
//! server as a process (`GET /keys`, its sign-in form standing in for a
//! host's login).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
//! Every test here is ignored unless run with `--include-ignored` (CI does),
//! and fails there, naming the packages, when they are missing.
#![cfg(all(unix, feature = "ui", feature = "sqlite", feature = "axum"))]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use browser::Browser;
use common::server::{ADMIN_TOKEN, Server, admin, client, free_port, whoami};
use serde_json::{Value, json};
use uuid::Uuid;

/// The key title no page may turn into markup.
const HOSTILE_TITLE: &str = "<img src=x onerror=alert(1)>";
/// Usage reaches the store within the example server's flush interval (10 s).
const USAGE_TIMEOUT: Duration = Duration::from_secs(40);

async fn sign_in(browser: &Browser, token: &str, account: Uuid) {
    browser.wait_displayed("#sign-in").await;
    browser.fill("#sign-in-token", token).await;
    browser.fill("#sign-in-account", &account.to_string()).await;
    // Enter in the last field submits the form, as a keyboard user would.
    browser
        .find("#sign-in-account")
        .await
        .send_keys("\u{E007}")
        .await
        .unwrap();
}

/// Fills and submits the create form.
async fn create(browser: &Browser, title: &str, scopes: &str) {
    browser.fill("#create-title", title).await;
    browser.fill("#create-scopes", scopes).await;
    browser.click("#create button[type=submit]").await;
}

/// Waits for the credential panel; returns the credential it shows.
async fn shown_credential(browser: &Browser) -> String {
    browser.wait_displayed("#secret").await;
    let warning = browser.text("#secret .warning").await;
    assert!(warning.contains("shown only once"), "{warning}");
    browser.value("#secret-value").await
}

/// Closes the credential panel; the credential leaves the page.
async fn dismiss_credential(browser: &Browser) {
    browser.click("#secret-done").await;
    browser.wait_hidden("#secret").await;
    assert_eq!(browser.value("#secret-value").await, "");
}

fn key(key_id: &str) -> String {
    format!(r#"#keys li[data-key-id="{key_id}"]"#)
}

/// The key ids the list shows, top to bottom.
async fn listed(browser: &Browser) -> Vec<String> {
    let ids = browser
        .run(
            "return [...document.querySelectorAll('#keys li')].map(li => li.dataset.keyId)",
            vec![],
        )
        .await;
    serde_json::from_value(ids).unwrap()
}

/// Everything the page could have kept: storage, cookies, IndexedDB, caches,
/// its URL, history and every URL it fetched.
async fn kept_by_the_page(browser: &Browser) -> Value {
    browser
        .client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            (async () => ({
              local: Object.keys(localStorage).map((k) => `${k}=${localStorage.getItem(k)}`),
              session: Object.keys(sessionStorage).map((k) => `${k}=${sessionStorage.getItem(k)}`),
              cookie: document.cookie,
              url: location.href,
              history: history.length,
              databases: (await indexedDB.databases()).map((d) => d.name),
              caches: await caches.keys(),
              fetched: performance.getEntriesByType('resource').map((e) => e.name),
            }))().then(done, (e) => done({ error: String(e) }));"#,
            vec![],
        )
        .await
        .unwrap()
}

fn assert_keeps_no_secret(kept: &Value, url: &str, secrets: &[&str]) {
    assert!(kept.get("error").is_none(), "{kept}");
    assert_eq!(kept["local"], json!([]), "{kept}");
    assert_eq!(kept["session"], json!([]), "{kept}");
    assert_eq!(kept["cookie"], "", "{kept}");
    assert_eq!(kept["databases"], json!([]), "{kept}");
    assert_eq!(kept["caches"], json!([]), "{kept}");
    assert_eq!(kept["url"], url, "{kept}");
    let everything = kept.to_string();
    for secret in secrets {
        assert!(!everything.contains(secret), "{secret} kept: {kept}");
    }
}

/// Opens a key's usage panel and waits for its total to read `expected`,
/// refreshing while the counts are still on their way to the store.
async fn wait_usage_total(browser: &Browser, key_css: &str, expected: u64) {
    browser.click(&format!("{key_css} summary")).await;
    let deadline = Instant::now() + USAGE_TIMEOUT;
    loop {
        let total = browser
            .wait_text(&format!("{key_css} [data-total]"), |_| true)
            .await;
        let total: u64 = total.parse().unwrap();
        assert!(total <= expected, "usage total {total} over {expected}");
        if total == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "usage total still {total} after {USAGE_TIMEOUT:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.click(&format!("{key_css} .usage-refresh")).await;
    }
}

/// Where the screenshot goes: the test's temporary directory, and also
/// `KEYS_PAGE_SCREENSHOT` when set (`docs/keys-page.png` refreshes the
/// README's picture).
fn screenshot_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("keys-page.png")];
    if let Some(path) = std::env::var_os("KEYS_PAGE_SCREENSHOT") {
        paths.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path));
    }
    paths
}

/// Sign in, create (the credential read from the page works against
/// `/v1/whoami`), see the usage, rotate, revoke (after a confirmation, which
/// a cancel and an Escape decline), reload: nothing secret is kept anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn sign_in_create_use_rotate_revoke_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let http = client();
    let mut server = Server::start(dir.path(), logs.path(), "page", Some(ADMIN_TOKEN));
    server.wait_ready(&http).await;
    let browser = Browser::start().await;
    let account = Uuid::new_v4();
    let page = server.url("/keys");

    browser.client.goto(&page).await.unwrap();
    sign_in(&browser, ADMIN_TOKEN, account).await;
    browser
        .wait_text("#keys-state", |text| text.starts_with("No keys yet"))
        .await;

    // Create: the credential is shown once, and it works.
    browser.fill("#create-description", "deploys from CI").await;
    browser
        .find("#create-expiry")
        .await
        .select_by_value("30")
        .await
        .unwrap();
    create(&browser, "CI deploys", "reports:read, reports:write").await;
    let credential = shown_credential(&browser).await;
    let answer = whoami(&http, &server, &credential).await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["account_id"], account.to_string());
    assert_eq!(answer["scopes"], json!(["reports:read", "reports:write"]));
    let first = answer["key_id"].as_str().unwrap().to_owned();
    browser.click("#secret-copy").await;
    let copied = browser
        .wait_text("#secret-copied", |text| !text.is_empty())
        .await;
    assert!(
        copied == "Copied to the clipboard." || copied.contains("press Ctrl+C"),
        "{copied}"
    );
    dismiss_credential(&browser).await;
    browser
        .wait_text(&format!("{} .status", key(&first)), |text| text == "active")
        .await;
    let shown = browser.text(&key(&first)).await;
    for expected in [
        "CI deploys",
        "deploys from CI",
        "reports:read, reports:write",
        "Last used",
    ] {
        assert!(shown.contains(expected), "{expected} not in {shown}");
    }
    assert_keeps_no_secret(
        &kept_by_the_page(&browser).await,
        &page,
        &[&credential, ADMIN_TOKEN],
    );

    // Usage: the page's total counts every request the layer let through.
    for _ in 0..3 {
        assert_eq!(whoami(&http, &server, &credential).await.status(), 200);
    }
    wait_usage_total(&browser, &key(&first), 4).await;
    let bars = browser
        .run(
            "return [...document.querySelectorAll(arguments[0])].map(r => r.textContent)",
            vec![json!(format!("{} svg.chart rect", key(&first)))],
        )
        .await;
    let bars: Vec<String> = serde_json::from_value(bars).unwrap();
    assert_eq!(bars.len(), 30, "{bars:?}");
    let today = chrono::Utc::now().date_naive();
    assert_eq!(bars[29], format!("{today}: 4 requests"), "{bars:?}");

    // Rotate with a grace period: the new credential is shown once, the old
    // one works until the time the page names.
    browser
        .click(&format!("{} button.rotate", key(&first)))
        .await;
    browser.wait_displayed("#confirm").await;
    browser
        .find("#confirm-grace")
        .await
        .select_by_value("3600")
        .await
        .unwrap();
    browser.click("#confirm-ok").await;
    let rotated = shown_credential(&browser).await;
    assert_ne!(rotated, credential);
    let note = browser.text("#secret-note").await;
    assert!(note.contains("The old key keeps working until"), "{note}");
    let answer: Value = whoami(&http, &server, &rotated).await.json().await.unwrap();
    let second = answer["key_id"].as_str().unwrap().to_owned();
    assert_eq!(whoami(&http, &server, &credential).await.status(), 200);
    dismiss_credential(&browser).await;
    browser
        .wait_text(&format!("{} .status", key(&second)), |text| {
            text == "active"
        })
        .await;
    assert_eq!(listed(&browser).await, [second.clone(), first.clone()]);

    // Revoke: declined with the Cancel button, then from the keyboard
    // (Enter opens, Escape closes), then confirmed.
    let revoke = format!("{} button.revoke", key(&second));
    browser.click(&revoke).await;
    browser.wait_displayed("#confirm").await;
    let asked = browser.text("#confirm-text").await;
    assert!(asked.contains("CI deploys"), "{asked}");
    browser.click("#confirm-cancel").await;
    browser.wait_hidden("#confirm").await;
    browser
        .find(&revoke)
        .await
        .send_keys("\u{E007}")
        .await
        .unwrap();
    browser.wait_displayed("#confirm").await;
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("confirm-cancel")
    );
    focused.send_keys("\u{E00C}").await.unwrap();
    browser.wait_hidden("#confirm").await;
    assert_eq!(whoami(&http, &server, &rotated).await.status(), 200);
    browser.click(&revoke).await;
    browser.wait_displayed("#confirm").await;
    browser.click("#confirm-ok").await;
    browser
        .wait_text("#status", |text| text.contains("was revoked"))
        .await;
    assert_eq!(whoami(&http, &server, &rotated).await.status(), 401);
    assert_eq!(whoami(&http, &server, &credential).await.status(), 200);
    browser
        .wait_text(&format!("{} .status", key(&second)), |text| {
            text == "revoked"
        })
        .await;
    assert!(!browser.displayed(&revoke).await);

    // The picture for the README: both keys, the old one's usage open (two
    // more requests since, during its grace period).
    wait_usage_total(&browser, &key(&first), 6).await;
    browser.run("window.scrollTo(0, 0)", vec![]).await;
    for path in screenshot_paths() {
        browser.screenshot(&path).await;
    }
    assert_keeps_no_secret(
        &kept_by_the_page(&browser).await,
        &page,
        &[&credential, &rotated, ADMIN_TOKEN],
    );

    // Reload: the page forgot the token (in memory only) and keeps nothing.
    browser.client.refresh().await.unwrap();
    browser.wait_displayed("#sign-in").await;
    assert!(!browser.displayed("#app").await);
    assert_keeps_no_secret(
        &kept_by_the_page(&browser).await,
        &page,
        &[&credential, &rotated, ADMIN_TOKEN],
    );
    sign_in(&browser, ADMIN_TOKEN, account).await;
    browser
        .wait_text("#keys-state", |text| text.starts_with("2 keys"))
        .await;
    assert_eq!(listed(&browser).await, [second.clone(), first.clone()]);
    assert_eq!(
        browser.text(&format!("{} .status", key(&second))).await,
        "revoked"
    );
    // The old key's end, as the page shows it and as the API has it: within
    // the hour of grace chosen at the rotation.
    let shown = browser
        .run(
            "const dt = [...document.querySelectorAll(`${arguments[0]} dt`)]
               .find((dt) => dt.textContent === 'Expires');
             return dt.nextElementSibling.textContent",
            vec![json!(key(&first))],
        )
        .await;
    let stored: Value = admin(
        &http,
        reqwest::Method::GET,
        server.url(&format!("/v1/api-keys/{first}")),
        ADMIN_TOKEN,
        account,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let ends: chrono::DateTime<chrono::Utc> =
        stored["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        ends <= chrono::Utc::now() + chrono::TimeDelta::hours(1),
        "{stored}"
    );
    assert_eq!(shown, ends.format("%Y-%m-%d %H:%M UTC").to_string());
    assert!(note.contains(shown.as_str().unwrap()), "{note}");

    browser.close().await;
    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
    let output = server.output();
    for secret in [&credential, &rotated] {
        assert!(!output.contains(secret.as_str()), "{output}");
    }
}

/// Problems are shown as the problem document's `detail` (a refused token,
/// `422` with its fields, `409` at the key limit, a session that ended while
/// the page was open, a server gone), and a hostile title is shown as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn problems_are_shown_and_titles_stay_text() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let http = client();
    let bind = format!("127.0.0.1:{}", free_port());
    let env = [
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("MAX_KEYS_PER_ACCOUNT", "2"),
        ("BIND", bind.as_str()),
    ];
    let mut server = Server::start_with(dir.path(), logs.path(), "problems", &env);
    server.wait_ready(&http).await;
    let browser = Browser::start().await;
    let account = Uuid::new_v4();
    browser.client.goto(&server.url("/keys")).await.unwrap();

    // A refused token: the server's own words, and the form again.
    sign_in(&browser, "not-the-admin-token-at-all", account).await;
    let problem = browser.wait_text("#problem", |text| !text.is_empty()).await;
    assert!(
        problem.contains("Management requests need Authorization: Bearer <ADMIN_TOKEN>"),
        "{problem}"
    );
    browser.wait_displayed("#sign-in").await;
    sign_in(&browser, ADMIN_TOKEN, account).await;
    browser
        .wait_text("#keys-state", |text| text.starts_with("No keys yet"))
        .await;
    assert!(!browser.displayed("#problem").await);

    // 422: the detail and each field's message; nothing created.
    create(&browser, "   ", "").await;
    let problem = browser
        .wait_text("#problem", |text| text.contains("Invalid request body"))
        .await;
    assert!(problem.contains("title: "), "{problem}");
    create(&browser, "scoped", "Bad Scope!").await;
    let problem = browser
        .wait_text("#problem", |text| text.contains("scopes: "))
        .await;
    assert!(problem.contains("Invalid request body"), "{problem}");
    assert!(!browser.displayed("#secret").await);

    // A hostile title is text: no element made of it, no dialog.
    browser
        .fill("#create-description", "<script>alert(2)</script>")
        .await;
    create(&browser, HOSTILE_TITLE, "").await;
    shown_credential(&browser).await;
    dismiss_credential(&browser).await;
    browser
        .wait_text("#keys-state", |text| text.starts_with("1 key"))
        .await;
    assert_eq!(browser.text("#keys h3").await, HOSTILE_TITLE);
    assert_eq!(
        browser.text("#keys .description").await,
        "<script>alert(2)</script>"
    );
    let made = browser
        .run(
            "return document.querySelectorAll('#keys img, #keys script, main img').length",
            vec![],
        )
        .await;
    assert_eq!(made, 0);
    browser.click("#keys button.revoke").await;
    browser.wait_displayed("#confirm").await;
    let asked = browser.text("#confirm-text").await;
    assert!(asked.contains(HOSTILE_TITLE), "{asked}");
    browser.click("#confirm-cancel").await;
    browser.wait_hidden("#confirm").await;

    // 409 at the limit of two keys.
    create(&browser, "second", "").await;
    shown_credential(&browser).await;
    dismiss_credential(&browser).await;
    create(&browser, "third", "").await;
    browser
        .wait_text("#problem", |text| {
            text.contains("Too many API keys for this account")
        })
        .await;

    // The server goes away, then comes back with another token: the session
    // the page holds has ended.
    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
    browser.click("#keys-refresh").await;
    let problem = browser
        .wait_text("#problem", |text| text.contains("could not be reached"))
        .await;
    assert!(problem.starts_with("Loading the keys failed"), "{problem}");
    let env = [
        ("ADMIN_TOKEN", "another-admin-token-5d1a9e73"),
        ("MAX_KEYS_PER_ACCOUNT", "2"),
        ("BIND", bind.as_str()),
    ];
    let mut server = Server::start_with(dir.path(), logs.path(), "problems-again", &env);
    server.wait_ready(&http).await;
    browser.click("#keys-refresh").await;
    browser
        .wait_text("#problem", |text| {
            text.contains("Management requests need Authorization: Bearer <ADMIN_TOKEN>")
        })
        .await;
    browser.wait_displayed("#sign-in").await;
    sign_in(&browser, "another-admin-token-5d1a9e73", account).await;
    browser
        .wait_text("#keys-state", |text| text.starts_with("2 keys"))
        .await;

    // No dialog ever opened.
    let alert = browser.client.get_alert_text().await;
    assert!(alert.is_err(), "a dialog opened: {alert:?}");
    browser.close().await;
    drop(server);
}

/// Splits a `Content-Security-Policy` into its directives.
fn directives(policy: &str) -> HashMap<String, Vec<String>> {
    policy
        .split(';')
        .filter_map(|directive| {
            let mut words = directive.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect()
}

/// The page's headers hold the policy, its markup holds no inline script,
/// every control has a label, and in the browser nothing reaches another
/// origin: the page's own requests stay on its origin, and a fetch, an image
/// and a style sheet from another origin, or an inline script, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn the_policy_holds_and_nothing_leaves_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let http = client();
    let mut server = Server::start(dir.path(), logs.path(), "policy", Some(ADMIN_TOKEN));
    server.wait_ready(&http).await;

    let response = http.get(server.url("/keys")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let html = response.text().await.unwrap();
    let policy = headers["content-security-policy"].to_str().unwrap();
    let policy = directives(policy);
    for (directive, sources) in [
        ("default-src", &["'none'"][..]),
        ("script-src", &["'self'"]),
        ("style-src", &["'self'"]),
        ("connect-src", &["'self'"]),
        ("frame-ancestors", &["'none'"]),
        ("base-uri", &["'none'"]),
        ("form-action", &["'none'"]),
    ] {
        assert_eq!(policy[directive], sources, "{directive}: {policy:?}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    // No inline script, handler or style; every URL on this origin.
    let script = regex::Regex::new(r"<script\b([^>]*)>\s*</script>").unwrap();
    assert_eq!(
        script.find_iter(&html).count(),
        html.matches("<script").count()
    );
    let urls = regex::Regex::new(r#"\b(?:src|href)="([^"]*)""#).unwrap();
    let mut size = html.len();
    let mut assets = 0;
    for url in urls.captures_iter(&html) {
        let url = &url[1];
        assert!(url.starts_with('/') && !url.starts_with("//"), "{url}");
        let asset = http.get(server.url(url)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{url}");
        assert_eq!(asset.headers()["x-content-type-options"], "nosniff");
        let kind = asset.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            kind.starts_with("text/javascript") || kind.starts_with("text/css"),
            "{url}: {kind}"
        );
        size += asset.bytes().await.unwrap().len();
        assets += 1;
    }
    assert_eq!(assets, 2);
    assert!(size < 100 * 1024, "{size} bytes");
    let handler = regex::Regex::new(r"(?i)\son[a-z]+\s*=|\sstyle\s*=").unwrap();
    assert!(!handler.is_match(&html));

    // Another origin (a port of this host) that counts the connections it gets.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_origin = format!("http://{}", other.local_addr().unwrap());
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reached);
    let listener = tokio::spawn(async move {
        while let Ok((_connection, _)) = other.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let browser = Browser::start().await;
    let page = server.url("/keys");
    browser.client.goto(&page).await.unwrap();
    sign_in(&browser, ADMIN_TOKEN, Uuid::new_v4()).await;
    create(&browser, "policy", "").await;
    shown_credential(&browser).await;
    dismiss_credential(&browser).await;
    browser
        .wait_text("#keys-state", |text| text.starts_with("1 key"))
        .await;
    browser.click("#keys summary").await;
    browser.wait_displayed("#keys [data-total]").await;

    // Every control is labelled and reachable from the keyboard.
    let controls = browser
        .run(
            r#"const all = (css) => [...document.querySelectorAll(css)];
            return {
              unlabelled: all('input, select, textarea')
                .filter((e) => e.labels.length === 0 && !e.getAttribute('aria-label')).map((e) => e.id),
              unnamed: all('button, summary')
                .filter((e) => !(e.getAttribute('aria-label') || e.textContent.trim())).map((e) => e.outerHTML),
              unreachable: all('button, input, select, textarea, summary')
                .filter((e) => e.tabIndex < 0).map((e) => e.id || e.outerHTML),
              count: all('button, input, select, textarea, summary').length,
            };"#,
            vec![],
        )
        .await;
    assert_eq!(controls["unlabelled"], json!([]), "{controls}");
    assert_eq!(controls["unnamed"], json!([]), "{controls}");
    assert_eq!(controls["unreachable"], json!([]), "{controls}");
    assert!(controls["count"].as_u64().unwrap() > 10, "{controls}");

    // Everything the page loaded came from its own origin.
    let fetched = browser
        .run(
            "return [...performance.getEntriesByType('navigation'),
                     ...performance.getEntriesByType('resource')].map((e) => e.name)",
            vec![],
        )
        .await;
    let fetched: Vec<String> = serde_json::from_value(fetched).unwrap();
    let origin = server.url("/");
    assert!(
        fetched.iter().any(|url| url.contains("/keys.js")),
        "{fetched:?}"
    );
    assert!(
        fetched.iter().any(|url| url.contains("/v1/api-keys")),
        "{fetched:?}"
    );
    for url in &fetched {
        assert!(url.starts_with(&origin), "{url} is not on {origin}");
    }

    // Loads from another origin and an inline script, tried in the page.
    let tried = browser
        .client
        .execute_async(
            r#"const [other, done] = arguments;
            const violations = [];
            document.addEventListener('securitypolicyviolation', (e) => violations.push(e.effectiveDirective));
            const failed = (element) => new Promise((resolve) => {
              element.onload = () => resolve('loaded');
              element.onerror = () => resolve('refused');
            });
            (async () => {
              const result = {};
              result.fetch = await fetch(`${other}/data`).then(() => 'loaded', () => 'refused');
              const image = document.createElement('img');
              const image_ = failed(image);
              image.src = `${other}/image.png`;
              document.body.append(image);
              result.image = await image_;
              const sheet = document.createElement('link');
              sheet.rel = 'stylesheet';
              const sheet_ = failed(sheet);
              sheet.href = `${other}/style.css`;
              document.head.append(sheet);
              result.sheet = await sheet_;
              try {
                const script = document.createElement('script');
                script.textContent = 'window.inlineRan = true';
                document.body.append(script);
              } catch (e) {
                result.scriptError = String(e);
              }
              result.inlineRan = window.inlineRan === true;
              for (let i = 0; i < 100 && violations.length < 3; i++) {
                await new Promise((r) => setTimeout(r, 50));
              }
              result.violations = violations;
              return result;
            })().then(done, (e) => done({ error: String(e) }));"#,
            vec![json!(other_origin)],
        )
        .await
        .unwrap();
    assert_eq!(tried["fetch"], "refused", "{tried}");
    assert_eq!(tried["image"], "refused", "{tried}");
    assert_eq!(tried["sheet"], "refused", "{tried}");
    assert_eq!(tried["inlineRan"], false, "{tried}");
    let violations: Vec<String> = serde_json::from_value(tried["violations"].clone()).unwrap();
    for directive in ["connect-src", "img-src", "style-src-elem"] {
        assert!(
            violations.iter().any(|seen| seen == directive),
            "{directive} not reported: {tried}"
        );
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "another origin was reached"
    );

    browser.close().await;
    listener.abort();
    drop(server);
}

/// A host's own login in front of the page and the API, no sign-in form: the
/// session cookie the host set (HttpOnly, out of the page's reach)
/// authenticates the page's calls, and a session that ended (the host
/// redirects to its login) is reported on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn behind_the_hosts_own_login() {
    use axum::{
        Router,
        extract::Request,
        http::header,
        middleware::{self, Next},
        response::{IntoResponse, Redirect},
        routing::get,
    };
    use tower_api_keys::{
        AccountId, ApiKeyValidator, KeyManager, Pepper, router::ManagementRouter,
        store::MemoryRepository, ui::KeysPage,
    };

    let pepper = Pepper::try_from("a-pepper-of-at-least-16-bytes").unwrap();
    let validator = ApiKeyValidator::new(MemoryRepository::new(), pepper);
    let account = AccountId::new(Uuid::new_v4());
    let session = Uuid::new_v4().simple().to_string();
    let sessions = Arc::new(std::sync::Mutex::new(vec![session.clone()]));
    let open = Arc::clone(&sessions);
    let login = move |request: Request, next: Next| {
        let open = Arc::clone(&open);
        async move {
            let signed_in = request
                .headers()
                .get(header::COOKIE)
                .and_then(|cookies| cookies.to_str().ok())
                .is_some_and(|cookies| {
                    cookies.split(';').any(|cookie| {
                        cookie
                            .trim()
                            .strip_prefix("session=")
                            .is_some_and(|id| open.lock().unwrap().iter().any(|open| open == id))
                    })
                });
            if !signed_in {
                return Redirect::to("/login").into_response();
            }
            let mut request = request;
            request.extensions_mut().insert(account);
            next.run(request).await
        }
    };
    let cookie = format!("session={session}; Path=/; HttpOnly; SameSite=Strict");
    let app = Router::new()
        .nest(
            "/v1/api-keys",
            ManagementRouter::new(KeyManager::new(validator.clone())).build(),
        )
        .nest("/account/keys", KeysPage::new("/v1/api-keys").build())
        .layer(middleware::from_fn(login))
        .route(
            "/login",
            get(move || async move {
                (
                    [(header::SET_COOKIE, cookie)],
                    Redirect::to("/account/keys"),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let host = tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{origin}/login"))
        .await
        .unwrap();
    browser
        .wait_text("#keys-state", |text| text.starts_with("No keys yet"))
        .await;
    assert_eq!(
        browser.client.current_url().await.unwrap().as_str(),
        format!("{origin}/account/keys")
    );
    assert!(!browser.displayed("#sign-in").await);
    assert!(!browser.displayed("#sign-out").await);

    create(&browser, "host session", "").await;
    let credential = shown_credential(&browser).await;
    let key = validator.validate(&credential).await.unwrap();
    assert_eq!(key.account_id(), account);
    dismiss_credential(&browser).await;
    browser
        .wait_text("#keys-state", |text| text.starts_with("1 key"))
        .await;
    let kept = kept_by_the_page(&browser).await;
    assert_keeps_no_secret(
        &kept,
        &format!("{origin}/account/keys"),
        &[&credential, &session],
    );

    // The host ends the session: its redirect to the login is not followed
    // but said, and the page stays.
    sessions.lock().unwrap().clear();
    browser.click("#keys-refresh").await;
    let problem = browser
        .wait_text("#problem", |text| text.contains("redirected"))
        .await;
    assert!(problem.contains("sign in again"), "{problem}");
    assert!(browser.displayed("#create").await);

    browser.close().await;
    host.abort();
}

//! Headless Chromium driven over WebDriver: Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them), chromedriver started on a free
//! port, a fresh profile per browser. Closing the session ends the browser;
//! dropping a [`Browser`] kills its chromedriver (by its process id only).
//!
//! Included by `#[path]` from tests/browser.rs only, so that no other test
//! binary builds the WebDriver client.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};

/// How long a page may take to reach an expected state.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The first of `candidates` that exists, or the program found on `PATH`.
fn program(candidates: &[&str], name: &str) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// `127.0.0.1:<port>` of the driver and the session's id, to end the
    /// session from `drop`.
    driver_address: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; panics, naming
    /// the packages, when either is not installed.
    pub async fn start() -> Self {
        let missing = "this test needs Debian's `chromium` and `chromium-driver` \
                       (.ci/run installs them); install them or run without `--include-ignored`";
        let chromium = program(&["/usr/bin/chromium"], "chromium")
            .unwrap_or_else(|| panic!("chromium is not installed: {missing}"));
        let chromedriver = program(&["/usr/bin/chromedriver"], "chromedriver")
            .unwrap_or_else(|| panic!("chromedriver is not installed: {missing}"));
        let profile = tempfile::Builder::new()
            .prefix("tak-chromium-")
            .tempdir()
            .unwrap();
        let port = crate::common::server::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let webdriver = format!("http://127.0.0.1:{port}");
        wait_for_driver(&webdriver).await;
        let capabilities = json!({
            "browserName": "chrome",
            // An alert() that a page opens stays open, for the test to see.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1000,1500",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "no Chromium session through chromedriver: {err}\n{}",
                    std::fs::read_to_string(profile.path().join("chromedriver.log"))
                        .unwrap_or_default()
                )
            });
        let session = client.session_id().await.unwrap().expect("a session id");
        Self {
            client,
            driver,
            driver_address: format!("127.0.0.1:{port}"),
            session,
            _profile: profile,
        }
    }

    /// Ends the session, then the driver (by dropping it).
    pub async fn close(self) {
        self.client.clone().close().await.ok();
        // The blocking requests of `drop`, off the runtime's threads.
        tokio::task::spawn_blocking(move || drop(self))
            .await
            .unwrap();
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no element {css}: {err}"))
    }

    /// Types `text` into the field `css` after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    pub async fn displayed(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Waits until `css` is displayed and its text satisfies `ready`; returns
    /// the text.
    pub async fn wait_text(&self, css: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) if element.is_displayed().await.unwrap_or(false) => {
                    element.text().await.ok()
                }
                _ => None,
            };
            if let Some(text) = &text
                && ready(text)
            {
                return text.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{css} did not reach the expected text within {PAGE_TIMEOUT:?}; it reads {text:?}; \
                 the page's problem reads {:?}",
                self.problem_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `css` is displayed.
    pub async fn wait_displayed(&self, css: &str) {
        self.wait_text(css, |_| true).await;
    }

    /// Waits until `css` is no longer displayed.
    pub async fn wait_hidden(&self, css: &str) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        while self.displayed(css).await {
            assert!(
                Instant::now() < deadline,
                "{css} still shown after {PAGE_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The problem the page shows, if it shows one.
    pub async fn problem_text(&self) -> Option<String> {
        let problem = self.client.find(Locator::Id("problem")).await.ok()?;
        if problem.is_displayed().await.unwrap_or(false) {
            problem.text().await.ok()
        } else {
            None
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Also reached when a test panics before `close`: end the session (and
        // with it the browser) over a blocking request, then the driver.
        if let Ok(mut driver) = std::net::TcpStream::connect(&self.driver_address) {
            use std::io::{Read as _, Write as _};
            let _ = driver.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                driver,
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n",
                self.session, self.driver_address
            );
            let _ = driver.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Waits until chromedriver answers `/status` with `ready`.
async fn wait_for_driver(webdriver: &str) {
    let client = crate::common::server::client();
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        if let Ok(response) = client.get(format!("{webdriver}/status")).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer at {webdriver} within {PAGE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

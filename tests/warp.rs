//! The warp example's server, on loopback, against a real HTTP client.

mod common;

#[path = "../examples/warp.rs"]
#[allow(dead_code)]
mod example;

use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_api_keys::{
    AccountId, ApiKeyValidator, CreatedKey, KeyManager, NewApiKey, Rejection,
    headers::PROBLEM_JSON, store::SeaOrmRepository,
};
use uuid::Uuid;

use common::Probe;

/// The example's warp server over a fresh SQLite file, with a key manager on the
/// same validator, and a store that can be made to fail.
struct Warp {
    validator: ApiKeyValidator,
    manager: KeyManager,
    probe: Probe<SeaOrmRepository>,
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    _db: common::TestDb,
}

impl Warp {
    async fn start() -> Self {
        let db = common::sqlite().await;
        let probe = Probe::new(db.repo.clone());
        let validator = ApiKeyValidator::new(probe.clone(), common::pepper());
        let manager = KeyManager::new(validator.clone());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(example::serve(validator.clone(), listener, async {
            stopped.await.ok();
        }));
        Self {
            validator,
            manager,
            probe,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            stop: Some(stop),
            server,
            _db: db,
        }
    }

    async fn create_key(&self, account: AccountId) -> CreatedKey {
        self.manager
            .create(account, NewApiKey::new("warp client"))
            .await
            .unwrap()
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    async fn whoami(&self, credential: Option<&str>) -> reqwest::Response {
        let mut request = self.get("/v1/whoami");
        if let Some(credential) = credential {
            request = request.header("x-api-key", credential);
        }
        request.send().await.unwrap()
    }

    /// Stops the server as a signal would, and checks that it ends.
    async fn stop(mut self) {
        drop(self.client);
        self.stop.take().unwrap().send(()).unwrap();
        self.server.await.unwrap();
        self.validator.shutdown().await;
    }
}

/// A problem document with this status and `detail`.
async fn assert_problem(response: reqwest::Response, status: StatusCode, detail: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["title"], status.canonical_reason().unwrap());
    assert_eq!(body["detail"], detail);
    if status == StatusCode::UNAUTHORIZED {
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_key_gets_its_account() {
    let warp = Warp::start().await;
    let account = AccountId::new(Uuid::new_v4());
    let key = warp.create_key(account).await;
    let credential = key.credential();

    let response = warp.whoami(Some(&credential)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "account_id": account.to_string(),
            "key_id": key.key.key_id.to_string(),
        })
    );

    // `Authorization: Bearer` works too.
    let response = warp
        .get("/v1/whoami")
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["account_id"], account.to_string());
    warp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_key_is_a_401_problem() {
    let warp = Warp::start().await;
    let account = AccountId::new(Uuid::new_v4());
    let key = warp.create_key(account).await;
    let wrong_secret = format!("{}:sk_{}", key.key.public_key, "A".repeat(32));
    let unknown = format!("pk_{}:sk_{}", "B".repeat(32), "C".repeat(32));

    let mut bodies = Vec::new();
    for credential in [&wrong_secret, &unknown] {
        let response = warp.whoami(Some(credential)).await;
        bodies.push(assert_problem(response, StatusCode::UNAUTHORIZED, "Invalid API key").await);
    }
    assert_eq!(bodies[0], bodies[1]);

    // Revoked: refused on the very next request.
    let credential = key.credential();
    assert_eq!(
        warp.whoami(Some(&credential)).await.status(),
        StatusCode::OK
    );
    warp.manager.revoke(account, key.key.key_id).await.unwrap();
    let response = warp.whoami(Some(&credential)).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "Invalid API key").await;
    warp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_key_is_a_401_problem() {
    let warp = Warp::start().await;
    let response = warp.whoami(None).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "Missing API key").await;

    let response = warp.whoami(Some("pk_short:sk_short")).await;
    assert_problem(
        response,
        StatusCode::UNAUTHORIZED,
        Rejection::MalformedCredential.detail(),
    )
    .await;
    assert_eq!(warp.probe.lookups(), 0);
    warp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_a_503_problem() {
    let warp = Warp::start().await;
    let key = warp.create_key(AccountId::new(Uuid::new_v4())).await;
    warp.probe.set_failing(true);
    let response = warp.whoami(Some(&key.credential())).await;
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "Authentication temporarily unavailable",
    )
    .await;
    warp.probe.set_failing(false);
    assert_eq!(
        warp.whoami(Some(&key.credential())).await.status(),
        StatusCode::OK
    );
    warp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warp_rejections_behind_the_layer_are_problems_too() {
    let warp = Warp::start().await;
    let credential = warp
        .create_key(AccountId::new(Uuid::new_v4()))
        .await
        .credential();

    let response = warp
        .get("/v1/nowhere")
        .header("x-api-key", &credential)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, "Not found").await;

    let response = warp
        .client
        .post(format!("{}/v1/whoami", warp.base))
        .header("x-api-key", &credential)
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
    )
    .await;

    // Without a key the layer answers first, whatever the path.
    let response = warp.get("/v1/nowhere").send().await.unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "Missing API key").await;
    warp.stop().await;
}

/// The example's warp routes behind `ApiKeyAuthLayer` and a scope guard
/// requiring `whoami:read`, served by hyper on loopback.
async fn start_guarded() -> Warp {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto,
        service::TowerToHyperService,
    };
    use tower_api_keys::{ApiKeyAuthLayer, RequireScopesLayer};

    let db = common::sqlite().await;
    let probe = Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::new(probe.clone(), common::pepper());
    let manager = KeyManager::new(validator.clone());
    let service = tower::ServiceBuilder::new()
        .layer(ApiKeyAuthLayer::new(validator.clone()))
        .layer(RequireScopesLayer::new(["whoami:read"]))
        .service(warp::service(example::routes()));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted.unwrap();
                    let connection = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(
                            TokioIo::new(stream),
                            TowerToHyperService::new(service.clone()),
                        )
                        .into_owned();
                    tokio::spawn(async move {
                        connection.await.ok();
                    });
                }
                _ = &mut stopped => break,
            }
        }
    });
    Warp {
        validator,
        manager,
        probe,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        stop: Some(stop),
        server,
        _db: db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_guard_refuses_a_key_lacking_the_scope_with_403() {
    use tower_api_keys::Scopes;

    let warp = start_guarded().await;
    let account = AccountId::new(Uuid::new_v4());
    let mut keys = Vec::new();
    for scopes in [
        None,
        Some(&["whoami:read", "x"][..]),
        Some(&["reports:read"][..]),
        Some(&[][..]),
    ] {
        let mut new = NewApiKey::new("warp client");
        if let Some(scopes) = scopes {
            new = new.with_scopes(Scopes::new(scopes).unwrap());
        }
        keys.push(warp.manager.create(account, new).await.unwrap());
    }

    // Twice each: from the store, then from the cache.
    for _ in 0..2 {
        for key in &keys[..2] {
            let response = warp.whoami(Some(&key.credential())).await;
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["account_id"], account.to_string());
            assert_eq!(body["key_id"], key.key.key_id.to_string());
        }
        for key in &keys[2..] {
            let response = warp.whoami(Some(&key.credential())).await;
            assert_eq!(
                response.headers()[header::WWW_AUTHENTICATE],
                r#"Bearer error="insufficient_scope", scope="whoami:read""#
            );
            assert_problem(response, StatusCode::FORBIDDEN, "Insufficient scope").await;
        }
    }

    // An invalid or missing key is still 401, not 403.
    let wrong_secret = format!("{}:sk_{}", keys[2].key.public_key, "A".repeat(32));
    let response = warp.whoami(Some(&wrong_secret)).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "Invalid API key").await;
    let response = warp.whoami(None).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "Missing API key").await;
    warp.stop().await;
}

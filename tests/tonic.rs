//! The tonic example's server, on loopback, against real tonic clients: the
//! `grpc.health.v1.Health` client of `tonic-health` and a raw unary client of the
//! example's `WhoAmI` service.

mod common;

#[path = "../examples/tonic.rs"]
#[allow(dead_code)]
mod example;

use example::whoami::{GET, WhoAmIReply, WhoAmIRequest};
use http::uri::PathAndQuery;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Code, Status,
    metadata::{MetadataMap, MetadataValue},
    transport::{Channel, server::TcpIncoming},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_prost::ProstCodec;
use tower_api_keys::{
    AccountId, ApiKeyValidator, CreatedKey, KeyManager, KeyPrefix, NewApiKey, RateLimit, Rejection,
    store::SeaOrmRepository,
};
use uuid::Uuid;

use common::Probe;

/// The example's gRPC server over a fresh SQLite file, with a key manager on
/// the same validator, and a store that can be made to fail.
struct Grpc {
    validator: ApiKeyValidator,
    manager: KeyManager,
    probe: Probe<SeaOrmRepository>,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    _db: common::TestDb,
}

impl Grpc {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With a key prefix: keys are also accepted in their token form.
    async fn start_with(prefix: Option<KeyPrefix>) -> Self {
        let db = common::sqlite().await;
        let probe = Probe::new(db.repo.clone());
        let mut builder = ApiKeyValidator::builder(probe.clone(), common::pepper());
        if let Some(prefix) = prefix {
            builder = builder.with_key_prefix(prefix);
        }
        let validator = builder.build();
        let manager = KeyManager::new(validator.clone());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(example::serve(
            validator.clone(),
            TcpIncoming::from(listener),
            async {
                stopped.await.ok();
            },
        ));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            validator,
            manager,
            probe,
            channel,
            stop: Some(stop),
            server,
            _db: db,
        }
    }

    async fn create_key(&self, account: AccountId) -> CreatedKey {
        self.manager
            .create(account, NewApiKey::new("grpc client"))
            .await
            .unwrap()
    }

    /// `Health/Check` for `service` with these metadata entries.
    async fn check_service(
        &self,
        service: &str,
        metadata: &[(&'static str, &str)],
    ) -> Result<ServingStatus, Status> {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        for &(name, value) in metadata {
            request
                .metadata_mut()
                .append(name, MetadataValue::try_from(value).unwrap());
        }
        let response = HealthClient::new(self.channel.clone())
            .check(request)
            .await?;
        Ok(response.into_inner().status())
    }

    async fn check(&self, credential: Option<&str>) -> Result<ServingStatus, Status> {
        match credential {
            Some(credential) => self.check_service("", &[("x-api-key", credential)]).await,
            None => self.check_service("", &[]).await,
        }
    }

    /// `WhoAmI/Get` with `credential` as `x-api-key`.
    async fn whoami(&self, credential: &str) -> Result<WhoAmIReply, Status> {
        self.whoami_response(credential)
            .await
            .map(tonic::Response::into_inner)
    }

    /// `WhoAmI/Get` with `credential` as `x-api-key`, the response metadata kept.
    async fn whoami_response(
        &self,
        credential: &str,
    ) -> Result<tonic::Response<WhoAmIReply>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|err| Status::unknown(err.to_string()))?;
        let mut request = tonic::Request::new(WhoAmIRequest {});
        request
            .metadata_mut()
            .insert("x-api-key", MetadataValue::try_from(credential).unwrap());
        let codec = ProstCodec::<WhoAmIRequest, WhoAmIReply>::default();
        grpc.unary(request, PathAndQuery::from_static(GET), codec)
            .await
    }

    /// Stops the server as a signal would, and checks that it ends cleanly.
    async fn stop(mut self) {
        drop(self.channel);
        self.stop.take().unwrap().send(()).unwrap();
        self.server.await.unwrap().unwrap();
        self.validator.shutdown().await;
    }
}

fn assert_refused(result: Result<ServingStatus, Status>, code: Code, rejection: Rejection) {
    let status = result.expect_err("the call should be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), rejection.detail(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_key_reaches_the_services_and_the_handler_reads_the_account() {
    let grpc = Grpc::start().await;
    let account = AccountId::new(Uuid::new_v4());
    let key = grpc.create_key(account).await;
    let credential = key.credential();

    assert_eq!(
        grpc.check(Some(&credential)).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        grpc.check_service(example::whoami::SERVICE, &[("x-api-key", &credential)])
            .await
            .unwrap(),
        ServingStatus::Serving
    );

    let me = grpc.whoami(&credential).await.unwrap();
    assert_eq!(me.account_id, account.to_string());
    assert_eq!(me.key_id, key.key.key_id.to_string());

    // `Authorization: Bearer pk_…:sk_…` metadata works too.
    let bearer = format!("Bearer {credential}");
    assert_eq!(
        grpc.check_service("", &[("authorization", &bearer)])
            .await
            .unwrap(),
        ServingStatus::Serving
    );
    grpc.stop().await;
}

/// The example hands tonic's remote address to the layer: a key allowed from
/// the client's address (127.0.0.1) gets through, one allowed only from
/// elsewhere is `PERMISSION_DENIED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_outside_the_allowlist_is_permission_denied() {
    let grpc = Grpc::start().await;
    let account = AccountId::new(Uuid::new_v4());
    let mut credentials = Vec::new();
    for allowed in ["127.0.0.1/32", "127.0.0.2/32"] {
        let key = grpc
            .manager
            .create(
                account,
                NewApiKey::new("fenced")
                    .with_allowed_cidrs(tower_api_keys::AllowedNetworks::new([allowed]).unwrap()),
            )
            .await
            .unwrap();
        credentials.push(key.credential());
    }
    let me = grpc.whoami(&credentials[0]).await.unwrap();
    assert_eq!(me.account_id, account.to_string());
    for _ in 0..2 {
        let status = grpc.whoami(&credentials[1]).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(status.message(), Rejection::AddressNotAllowed.detail());
        assert_refused(
            grpc.check(Some(&credentials[1])).await,
            Code::PermissionDenied,
            Rejection::AddressNotAllowed,
        );
    }
    grpc.stop().await;
}

/// With a key prefix, the token form is accepted in `x-api-key` and Bearer
/// metadata; a token with a broken checksum is refused without a lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_form_is_accepted_in_metadata() {
    let grpc = Grpc::start_with(Some(KeyPrefix::new("acme").unwrap())).await;
    let account = AccountId::new(Uuid::new_v4());
    let key = grpc.create_key(account).await;
    let token = key.token.expose().to_owned();
    assert!(token.starts_with("acme_"), "{token}");

    let me = grpc.whoami(&token).await.unwrap();
    assert_eq!(me.account_id, account.to_string());
    let bearer = format!("Bearer {token}");
    assert_eq!(
        grpc.check_service("", &[("authorization", &bearer)])
            .await
            .unwrap(),
        ServingStatus::Serving
    );

    let mut broken = token.clone();
    let last = broken.pop().unwrap();
    broken.push(if last == '0' { '1' } else { '0' });
    let lookups = grpc.probe.lookups();
    assert_refused(
        grpc.check(Some(&broken)).await,
        Code::Unauthenticated,
        Rejection::MalformedCredential,
    );
    assert_eq!(grpc.probe.lookups(), lookups);
    grpc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_unauthenticated() {
    let grpc = Grpc::start().await;
    assert_refused(
        grpc.check(None).await,
        Code::Unauthenticated,
        Rejection::MissingCredential,
    );
    // Someone else's JWT is not an API key.
    assert_refused(
        grpc.check_service(
            "",
            &[("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")],
        )
        .await,
        Code::Unauthenticated,
        Rejection::MissingCredential,
    );
    grpc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_key_is_unauthenticated_without_a_lookup() {
    let grpc = Grpc::start().await;
    let key = grpc.create_key(AccountId::new(Uuid::new_v4())).await;
    let credential = key.credential();
    for malformed in [
        "pk_short:sk_short".to_owned(),
        credential.replacen("pk_", "PK_", 1),
        format!("{credential}:extra"),
        credential.replacen(':', " : ", 1),
        "x".repeat(4096),
    ] {
        assert_refused(
            grpc.check(Some(&malformed)).await,
            Code::Unauthenticated,
            Rejection::MalformedCredential,
        );
    }
    // Two `x-api-key` entries are malformed too.
    assert_refused(
        grpc.check_service(
            "",
            &[("x-api-key", &credential), ("x-api-key", &credential)],
        )
        .await,
        Code::Unauthenticated,
        Rejection::MalformedCredential,
    );
    assert_eq!(grpc.probe.lookups(), 0);
    grpc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_or_unknown_key_is_unauthenticated() {
    let grpc = Grpc::start().await;
    let key = grpc.create_key(AccountId::new(Uuid::new_v4())).await;
    let wrong_secret = format!("{}:sk_{}", key.key.public_key, "A".repeat(32));
    let unknown = format!("pk_{}:sk_{}", "B".repeat(32), "C".repeat(32));
    for credential in [&wrong_secret, &unknown] {
        // Twice: from the store, then from the cache.
        for _ in 0..2 {
            assert_refused(
                grpc.check(Some(credential)).await,
                Code::Unauthenticated,
                Rejection::InvalidCredential,
            );
        }
    }
    grpc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_unauthenticated_on_the_next_call() {
    let grpc = Grpc::start().await;
    let account = AccountId::new(Uuid::new_v4());
    let key = grpc.create_key(account).await;
    let credential = key.credential();
    assert_eq!(
        grpc.check(Some(&credential)).await.unwrap(),
        ServingStatus::Serving
    );

    grpc.manager.revoke(account, key.key.key_id).await.unwrap();
    assert_refused(
        grpc.check(Some(&credential)).await,
        Code::Unauthenticated,
        Rejection::InvalidCredential,
    );
    let status = grpc.whoami(&credential).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    grpc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_unavailable_not_unauthenticated() {
    let grpc = Grpc::start().await;
    let key = grpc.create_key(AccountId::new(Uuid::new_v4())).await;
    let credential = key.credential();

    grpc.probe.set_failing(true);
    // Nothing cached for this key: the store must answer, and cannot.
    assert_refused(
        grpc.check(Some(&credential)).await,
        Code::Unavailable,
        Rejection::StoreUnavailable,
    );
    let unknown = format!("pk_{}:sk_{}", "D".repeat(32), "E".repeat(32));
    assert_refused(
        grpc.check(Some(&unknown)).await,
        Code::Unavailable,
        Rejection::StoreUnavailable,
    );

    grpc.probe.set_failing(false);
    assert_eq!(
        grpc.check(Some(&credential)).await.unwrap(),
        ServingStatus::Serving
    );
    grpc.stop().await;
}

/// The text of metadata entry `name`.
fn entry(metadata: &MetadataMap, name: &str) -> Option<String> {
    metadata
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// `r` of a `ratelimit` entry.
fn remaining(metadata: &MetadataMap) -> Option<u32> {
    let value = entry(metadata, "ratelimit")?;
    let r = value.split(';').find_map(|part| part.strip_prefix("r="))?;
    Some(r.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_resource_exhausted_with_the_ratelimit_metadata() {
    let grpc = Grpc::start().await;
    let account = AccountId::new(Uuid::new_v4());
    let key = grpc
        .manager
        .create(
            account,
            NewApiKey::new("metered").with_rate_limit(RateLimit::new(1, 3600).unwrap()),
        )
        .await
        .unwrap();
    let credential = key.credential();

    // The allowed call carries the RateLimit fields as response metadata.
    let allowed = grpc.whoami_response(&credential).await.unwrap();
    assert_eq!(
        entry(allowed.metadata(), "ratelimit-policy").as_deref(),
        Some("\"key\";q=1;w=3600")
    );
    assert_eq!(remaining(allowed.metadata()), Some(0));
    assert_eq!(allowed.get_ref().key_id, key.key.key_id.to_string());

    // The next one is refused with RESOURCE_EXHAUSTED, the same fields and
    // `retry-after` in its metadata.
    let status = grpc.whoami(&credential).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.code() as i32, 8);
    assert_eq!(status.message(), Rejection::RateLimited.detail());
    let metadata = status.metadata();
    assert_eq!(
        entry(metadata, "ratelimit-policy").as_deref(),
        Some("\"key\";q=1;w=3600")
    );
    assert_eq!(remaining(metadata), Some(0));
    let retry_after: u64 = entry(metadata, "retry-after")
        .expect("retry-after metadata")
        .parse()
        .unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "retry-after {retry_after}"
    );

    // Health/Check with the same key is refused alike: the limit is the key's,
    // not the method's.
    assert_refused(
        grpc.check(Some(&credential)).await,
        Code::ResourceExhausted,
        Rejection::RateLimited,
    );
    grpc.stop().await;
}

/// A server whose services sit behind `ApiKeyAuthLayer` and a scope guard
/// requiring `whoami:read`, both answering with `GrpcRejection`.
async fn start_guarded() -> Grpc {
    use tower_api_keys::{ApiKeyAuthLayer, RequireScopesLayer, grpc::GrpcRejection};

    let db = common::sqlite().await;
    let probe = Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::new(probe.clone(), common::pepper());
    let manager = KeyManager::new(validator.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<example::whoami::WhoAmIServer>().await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(
                tower::ServiceBuilder::new()
                    .layer(ApiKeyAuthLayer::new(validator.clone()).with_rejection(GrpcRejection))
                    .layer(RequireScopesLayer::new(["whoami:read"]).with_rejection(GrpcRejection)),
            )
            .add_service(health_service)
            .add_service(example::whoami::WhoAmIServer)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                stopped.await.ok();
            }),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Grpc {
        validator,
        manager,
        probe,
        channel,
        stop: Some(stop),
        server,
        _db: db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_guard_refuses_a_key_lacking_the_scope_with_permission_denied() {
    use tower_api_keys::Scopes;

    let grpc = start_guarded().await;
    let account = AccountId::new(Uuid::new_v4());
    let create = |title: &'static str, scopes: Option<&'static [&'static str]>| {
        let mut new = NewApiKey::new(title);
        if let Some(scopes) = scopes {
            new = new.with_scopes(Scopes::new(scopes).unwrap());
        }
        let manager = grpc.manager.clone();
        async move { manager.create(account, new).await.unwrap() }
    };
    let unrestricted = create("unrestricted", None).await;
    let scoped = create("scoped", Some(&["whoami:read"])).await;
    let lacking = create("lacking", Some(&["reports:read"])).await;
    let nothing = create("nothing", Some(&[])).await;

    // Twice each: from the store, then from the cache.
    for _ in 0..2 {
        for key in [&unrestricted, &scoped] {
            let me = grpc.whoami(&key.credential()).await.unwrap();
            assert_eq!(me.account_id, account.to_string());
            assert_eq!(me.key_id, key.key.key_id.to_string());
            assert_eq!(
                grpc.check(Some(&key.credential())).await.unwrap(),
                ServingStatus::Serving
            );
        }
        for key in [&lacking, &nothing] {
            let status = grpc.whoami(&key.credential()).await.unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert_eq!(status.code() as i32, 7);
            assert_eq!(status.message(), Rejection::InsufficientScope.detail());
            assert_refused(
                grpc.check(Some(&key.credential())).await,
                Code::PermissionDenied,
                Rejection::InsufficientScope,
            );
        }
    }

    // An invalid or missing key is still UNAUTHENTICATED, not PERMISSION_DENIED.
    let wrong_secret = format!("{}:sk_{}", lacking.key.public_key, "A".repeat(32));
    assert_refused(
        grpc.check(Some(&wrong_secret)).await,
        Code::Unauthenticated,
        Rejection::InvalidCredential,
    );
    assert_refused(
        grpc.check(None).await,
        Code::Unauthenticated,
        Rejection::MissingCredential,
    );
    grpc.stop().await;
}

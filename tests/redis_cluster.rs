//! Per-key rate limits on a real Redis Cluster (CONTRACT §13.3): the example
//! server as two processes, limits exact for keys on every master whether
//! `REDIS_URL` names one node or lists them all, again within 5 s of a
//! failover, and every in-process fallback counted in
//! `tower_api_keys_ratelimit_fallbacks_total`.
//!
//! The cluster tests need `TEST_REDIS_CLUSTER_URL` (a comma-separated list of
//! the cluster's nodes): they are ignored unless run with `--include-ignored`;
//! `.ci/run` starts a cluster of 3 masters and 3 replicas
//! (`.ci/redis-cluster.sh`) and sets it. A test that changes the
//! whole cluster (a failover, paused masters, flushed scripts) holds the
//! cluster alone; the others share it, each with keys of its own.
#![cfg(all(unix, feature = "axum", feature = "sqlite", feature = "redis"))]

mod common;

use std::{
    collections::HashMap,
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use common::server::{ADMIN_TOKEN, Created, Server, client, create_key_with, free_port, whoami};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio::sync::RwLock;
use tower_api_keys::{OnRedisError, RateLimit, RateLimiter};
use uuid::Uuid;

/// Shared by tests that leave the cluster as it is, held alone by a test that
/// fails over, pauses or flushes it.
static CLUSTER: RwLock<()> = RwLock::const_new(());

/// The limiter's default key prefix, as the example server uses it.
const PREFIX: &str = "tower_api_keys:rl:";
/// How soon after a failover limits must hold again.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

/// The nodes of `TEST_REDIS_CLUSTER_URL`; panics when it is unset.
fn cluster_urls() -> Vec<String> {
    common::provision::required(
        "TEST_REDIS_CLUSTER_URL",
        "a Redis Cluster (`.ci/redis-cluster.sh start` makes one)",
    )
    .split(',')
    .map(|url| url.trim().to_owned())
    .collect()
}

async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Clone, Debug)]
struct Node {
    id: String,
    url: String,
    /// The master's id, for a replica.
    master_id: Option<String>,
    slots: Vec<RangeInclusive<u16>>,
}

/// The cluster as one of its nodes sees it.
struct Topology {
    nodes: Vec<Node>,
}

impl Topology {
    async fn read(url: &str) -> Self {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut connect(url).await)
            .await
            .unwrap();
        let nodes = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let address = fields[1].split(['@', ',']).next().unwrap();
                let flags = fields[2];
                let master_id = flags
                    .split(',')
                    .any(|flag| flag == "slave")
                    .then(|| fields[3].to_owned());
                let slots = fields[8..]
                    .iter()
                    .filter(|slot| !slot.starts_with('['))
                    .map(|slot| match slot.split_once('-') {
                        Some((from, to)) => from.parse().unwrap()..=to.parse().unwrap(),
                        None => {
                            let one = slot.parse().unwrap();
                            one..=one
                        }
                    })
                    .collect();
                Node {
                    id: fields[0].to_owned(),
                    url: format!("redis://{address}"),
                    master_id,
                    slots,
                }
            })
            .collect();
        Self { nodes }
    }

    fn masters(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|node| node.master_id.is_none() && !node.slots.is_empty())
    }

    fn master_of(&self, slot: u16) -> &Node {
        self.masters()
            .find(|node| node.slots.iter().any(|range| range.contains(&slot)))
            .unwrap_or_else(|| panic!("no master holds slot {slot}"))
    }

    fn replica_of(&self, master: &Node) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.master_id.as_deref() == Some(&master.id))
            .unwrap_or_else(|| panic!("master {} has no replica", master.url))
    }
}

/// Items from `next` (each with the Redis key its limiter state lives
/// under) until every master holds `per_master` of them; returns them with
/// their master's id. Items beyond a master's share are dropped.
async fn spread_over_masters<T>(
    topology: &Topology,
    conn: &mut MultiplexedConnection,
    per_master: usize,
    mut next: impl AsyncFnMut() -> (T, String),
) -> Vec<(T, String)> {
    let mut count: HashMap<String, usize> = topology.masters().map(|m| (m.id.clone(), 0)).collect();
    assert_eq!(count.len(), 3, "3 masters expected: {:?}", topology.nodes);
    let mut items = Vec::new();
    for _ in 0..200 {
        if count.values().all(|&n| n >= per_master) {
            return items;
        }
        let (item, key) = next().await;
        let master = topology.master_of(slot(conn, &key).await).id.clone();
        let n = count.get_mut(&master).unwrap();
        if *n < per_master {
            *n += 1;
            items.push((item, master));
        }
    }
    panic!("200 tries and still a master without {per_master}: {count:?}");
}

async fn slot(conn: &mut MultiplexedConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

/// Two example servers on one key store (a SQLite file in a shared
/// directory), each with its own `REDIS_URL`.
struct Replicas {
    a: Server,
    b: Server,
    client: reqwest::Client,
    account: Uuid,
    _dir: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

impl Replicas {
    async fn start(redis_a: &str, redis_b: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let client = client();
        // One after the other: the first creates the pepper file and the database.
        let mut a = Server::start_with(
            dir.path(),
            logs.path(),
            "a",
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("REDIS_URL", redis_a)],
        );
        a.wait_ready(&client).await;
        let mut b = Server::start_with(
            dir.path(),
            logs.path(),
            "b",
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("REDIS_URL", redis_b)],
        );
        b.wait_ready(&client).await;
        Self {
            a,
            b,
            client,
            account: Uuid::new_v4(),
            _dir: dir,
            _logs: logs,
        }
    }

    async fn create(&self, title: &str, requests: u32) -> Created {
        create_key_with(
            &self.client,
            &self.a,
            ADMIN_TOKEN,
            self.account,
            json!({"title": title, "rate_limit": {"requests": requests, "period_seconds": 60}}),
        )
        .await
    }

    /// Creates keys limited to 3 per 60 s until every master holds the
    /// limiter keys of `per_master` of them; returns them with their master's id.
    async fn keys_on_every_master(
        &self,
        topology: &Topology,
        conn: &mut MultiplexedConnection,
        per_master: usize,
    ) -> Vec<(Created, String)> {
        spread_over_masters(topology, conn, per_master, async || {
            let key = self.create("spread", 3).await;
            let redis_key = format!("{PREFIX}{}", key.key_id);
            (key, redis_key)
        })
        .await
    }

    /// `n` requests with `key`, alternating between the two servers; the
    /// status of each.
    async fn requests(&self, key: &Created, n: usize) -> Vec<u16> {
        let mut statuses = Vec::with_capacity(n);
        for i in 0..n {
            let server = if i % 2 == 0 { &self.a } else { &self.b };
            statuses.push(
                whoami(&self.client, server, &key.credential)
                    .await
                    .status()
                    .as_u16(),
            );
        }
        statuses
    }

    /// Exactly 3 of 8 requests allowed across both servers, the rest `429`.
    async fn assert_exactly_three(&self, key: &Created, master: &str) {
        let statuses = self.requests(key, 8).await;
        assert_eq!(
            statuses,
            [200, 200, 200, 429, 429, 429, 429, 429],
            "key {} (limiter key on master {master})",
            key.key_id
        );
    }

    async fn fallbacks(&self) -> (u64, u64) {
        (
            fallbacks(&self.client, &self.a).await,
            fallbacks(&self.client, &self.b).await,
        )
    }
}

/// `tower_api_keys_ratelimit_fallbacks_total` at the server's `GET /metrics`
/// (0 before the first).
async fn fallbacks(client: &reqwest::Client, server: &Server) -> u64 {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("tower_api_keys_ratelimit_fallbacks_total "))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Runs `command` (e.g. `CLIENT PAUSE`) on every master.
async fn run_on_every_master(topology: &Topology, command: &redis::Cmd) {
    for master in topology.masters() {
        let () = command
            .query_async(&mut connect(&master.url).await)
            .await
            .unwrap_or_else(|e| panic!("{master:?}: {e}"));
    }
}

/// Two servers with these `REDIS_URL`s: 3 of 8 requests allowed across both
/// for two keys on every master, the rest `429`, and no fallback.
async fn assert_limits_hold_once_on_every_master(urls: &[String], redis_a: &str, redis_b: &str) {
    let topology = Topology::read(&urls[0]).await;
    let mut conn = connect(&urls[0]).await;
    let replicas = Replicas::start(redis_a, redis_b).await;
    for server in [&replicas.a, &replicas.b] {
        let stderr = server.stderr();
        assert!(
            stderr.contains("rate limits on a Redis Cluster"),
            "cluster mode not detected:\n{stderr}"
        );
    }
    let keys = replicas.keys_on_every_master(&topology, &mut conn, 2).await;
    for (key, master) in &keys {
        replicas.assert_exactly_three(key, master).await;
    }
    assert_eq!(
        replicas.fallbacks().await,
        (0, 0),
        "Redis answered every request"
    );
}

#[tokio::test]
#[ignore = "needs TEST_REDIS_CLUSTER_URL"]
async fn one_node_url_finds_the_cluster_and_limits_hold_once_on_every_master() {
    let urls = cluster_urls();
    let _shared = CLUSTER.read().await;
    // Two different nodes, whatever their roles.
    assert_limits_hold_once_on_every_master(&urls, &urls[0], &urls[urls.len() - 1]).await;
}

#[tokio::test]
#[ignore = "needs TEST_REDIS_CLUSTER_URL"]
async fn a_comma_separated_node_list_works_too() {
    let urls = cluster_urls();
    let _shared = CLUSTER.read().await;
    let reversed: Vec<&str> = urls.iter().rev().map(String::as_str).collect();
    assert_limits_hold_once_on_every_master(&urls, &urls.join(","), &reversed.join(", ")).await;
}

/// A replica promoted with `CLUSTER FAILOVER` while requests keep coming: no
/// request is stuck or refused for it, a budget spent before the failover
/// stays spent, and from 5 s after the promotion limits are exact again for
/// keys on every master, the promoted one included.
#[tokio::test]
#[ignore = "needs TEST_REDIS_CLUSTER_URL"]
async fn limits_hold_again_within_5s_of_a_failover() {
    let urls = cluster_urls();
    let _alone = CLUSTER.write().await;
    let topology = Topology::read(&urls[0]).await;
    let mut conn = connect(&urls[0]).await;
    let replicas = Replicas::start(&urls[0], &urls.join(",")).await;

    // A key whose budget is spent before the failover, on the master that fails over.
    let spent = replicas.create("spent", 3).await;
    assert_eq!(replicas.requests(&spent, 4).await, [200, 200, 200, 429]);
    let old_master =
        topology.master_of(slot(&mut conn, &format!("{PREFIX}{}", spent.key_id)).await);
    let promoted = topology.replica_of(old_master).clone();

    // Traffic during the failover, on a key that is never over its limit.
    let busy = replicas.create("busy", 1_000_000).await;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let traffic = {
        let client = replicas.client.clone();
        let url = replicas.a.url("/v1/whoami");
        let credential = busy.credential.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut statuses = Vec::new();
            while !*stopped.borrow_and_update() {
                let started = Instant::now();
                let response = client
                    .get(&url)
                    .header("x-api-key", &credential)
                    .send()
                    .await
                    .unwrap();
                slowest = slowest.max(started.elapsed());
                statuses.push(response.status().as_u16());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (slowest, statuses)
        })
    };

    let mut replica = connect(&promoted.url).await;
    let () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut replica)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut replica).await.unwrap();
        if matches!(&role[0], redis::Value::BulkString(role) if role == b"master") {
            break;
        }
        assert!(Instant::now() < deadline, "{} not promoted", promoted.url);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted_at = Instant::now();
    tokio::time::sleep_until((promoted_at + FAILOVER_BOUND).into()).await;
    stop.send(true).unwrap();
    let (slowest, statuses) = traffic.await.unwrap();
    assert!(
        statuses.iter().all(|&status| status == 200),
        "a request failed during the failover: {statuses:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?} during the failover"
    );

    // 5 s after the promotion: exact again, the promoted master included.
    let before = replicas.fallbacks().await;
    let topology = Topology::read(&urls[0]).await;
    assert!(
        topology.masters().any(|m| m.id == promoted.id),
        "{} is not a master: {:?}",
        promoted.url,
        topology.nodes
    );
    assert_eq!(
        topology
            .master_of(slot(&mut conn, &format!("{PREFIX}{}", spent.key_id)).await)
            .id,
        promoted.id
    );
    assert_eq!(
        replicas.requests(&spent, 2).await,
        [429, 429],
        "the budget spent before the failover"
    );
    let keys = replicas.keys_on_every_master(&topology, &mut conn, 1).await;
    for (key, master) in &keys {
        replicas.assert_exactly_three(key, master).await;
    }
    assert_eq!(
        replicas.fallbacks().await,
        before,
        "Redis answered every request once the failover was over"
    );
}

/// Masters that cannot answer (paused): each request is limited in process,
/// counted once in `tower_api_keys_ratelimit_fallbacks_total`, and logged once.
#[tokio::test]
#[ignore = "needs TEST_REDIS_CLUSTER_URL"]
async fn every_fallback_is_counted_and_logged_once_per_10s() {
    let urls = cluster_urls();
    let _alone = CLUSTER.write().await;
    let topology = Topology::read(&urls[0]).await;
    let replicas = Replicas::start(&urls[0], &urls[1]).await;
    let key = replicas.create("paused", 3).await;
    assert_eq!(replicas.fallbacks().await, (0, 0));

    // Scripts wait while the masters are paused for writes; the limiter gives
    // up after its 50 ms and decides in this process.
    run_on_every_master(
        &topology,
        redis::cmd("CLIENT").arg("PAUSE").arg(10_000).arg("WRITE"),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            whoami(&replicas.client, &replicas.a, &key.credential)
                .await
                .status()
                .as_u16(),
        );
    }
    run_on_every_master(&topology, &redis::cmd("CLIENT").arg("UNPAUSE").to_owned()).await;
    assert_eq!(statuses, [200, 200, 200, 429, 429], "limited in process");
    assert_eq!(replicas.fallbacks().await, (5, 0));
    let stderr = replicas.a.stderr();
    assert_eq!(
        stderr
            .matches("Redis rate limiting unavailable; limiting in this process only")
            .count(),
        1,
        "{stderr}"
    );

    // Redis answers again: nothing more counted.
    let fresh = replicas.create("after the pause", 3).await;
    assert_eq!(replicas.requests(&fresh, 4).await, [200, 200, 200, 429]);
    assert_eq!(replicas.fallbacks().await, (5, 0));
}

/// A `REDIS_URL` that cannot be used stops the server at start with exit
/// status 1 and says why, without the password. Needs no cluster.
#[tokio::test]
async fn an_unusable_redis_url_stops_the_server() {
    let dead = || format!("127.0.0.1:{}", free_port());
    let (one, two, three) = (dead(), dead(), dead());
    let mut cases = vec![
        (format!("redis://user:pw-single@{one}"), one.clone()),
        (
            format!("redis://user:pw-list@{two},redis://user:pw-list@{three}"),
            format!("redis://***@{two},redis://***@{three}"),
        ),
        ("redis://:pw-bad-url@".to_owned(), "redis://***@".to_owned()),
    ];
    // A single Redis given as a node list is not a cluster.
    if let Ok(single) = std::env::var("TEST_REDIS_URL") {
        cases.push((format!("{single},{single}"), "Redis Cluster".to_owned()));
    }
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    for (i, (url, shown)) in cases.iter().enumerate() {
        let mut server = Server::start_with(
            dir.path(),
            logs.path(),
            &format!("unusable-{i}"),
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("REDIS_URL", url)],
        );
        let status = server.exit().await;
        let output = server.output();
        assert_eq!(status.code(), Some(1), "{url}: {status}\n{output}");
        assert!(
            output.contains("error: cannot use Redis for rate limits"),
            "{url}:\n{output}"
        );
        assert!(output.contains(shown.as_str()), "{url}:\n{output}");
        assert!(!output.contains("pw-"), "a password was printed:\n{output}");
    }
}

/// `per_master` key ids for every master, chosen by the slot of
/// `<prefix><id>`.
async fn key_ids_on_every_master(
    topology: &Topology,
    conn: &mut MultiplexedConnection,
    prefix: &str,
    per_master: usize,
) -> Vec<Uuid> {
    spread_over_masters(topology, conn, per_master, async || {
        let id = Uuid::new_v4();
        (id, format!("{prefix}{id}"))
    })
    .await
    .into_iter()
    .map(|(id, _)| id)
    .collect()
}

/// Through the library: a limiter on one node and one on the node list share
/// each key's budget under concurrent checks, for keys on every master.
#[tokio::test]
#[ignore = "needs TEST_REDIS_CLUSTER_URL"]
async fn concurrent_checks_never_exceed_a_budget_on_any_master() {
    let urls = cluster_urls();
    let _shared = CLUSTER.read().await;
    let topology = Topology::read(&urls[0]).await;
    let mut conn = connect(&urls[0]).await;
    let prefix = format!("tower_api_keys_test:{}:", Uuid::new_v4());
    let limiter = |limiter: RateLimiter| {
        limiter
            .key_prefix(prefix.clone())
            .redis_timeout(Duration::from_secs(2))
            .on_redis_error(OnRedisError::Refuse)
    };
    let a = limiter(RateLimiter::redis(&urls[2]).await.unwrap());
    let b = limiter(RateLimiter::redis_cluster(&urls).await.unwrap());
    assert!(format!("{a:?}").contains("cluster: true"), "{a:?}");
    let ten = RateLimit::new(10, 3_600).unwrap();
    for key in key_ids_on_every_master(&topology, &mut conn, &prefix, 2).await {
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { limiter.check(key, ten).await.unwrap() })
            })
            .collect();
        let mut remaining = Vec::new();
        for task in tasks {
            let decision = task.await.unwrap();
            if decision.allowed {
                remaining.push(decision.remaining);
            }
        }
        remaining.sort_unstable();
        assert_eq!(remaining, (0..10).collect::<Vec<_>>(), "key {key}");
    }
}

/// The script is loaded on demand on every master: after `SCRIPT FLUSH` on
/// every node, the first check of a key on each master answers (`NOSCRIPT`,
/// `SCRIPT LOAD`, `EVALSHA` again) and every master holds the script again.
#[tokio::test]
#[ignore = "needs TEST_REDIS_CLUSTER_URL"]
async fn the_script_loads_itself_on_every_master() {
    let urls = cluster_urls();
    let _alone = CLUSTER.write().await;
    let topology = Topology::read(&urls[0]).await;
    let mut conn = connect(&urls[0]).await;
    let prefix = format!("tower_api_keys_test:{}:", Uuid::new_v4());
    let limiter = RateLimiter::redis(&urls[0])
        .await
        .unwrap()
        .key_prefix(prefix.clone())
        .redis_timeout(Duration::from_secs(2))
        .on_redis_error(OnRedisError::Refuse);
    for node in &topology.nodes {
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut connect(&node.url).await)
            .await
            .unwrap();
    }
    let one = RateLimit::new(1, 60).unwrap();
    for key in key_ids_on_every_master(&topology, &mut conn, &prefix, 1).await {
        assert!(
            limiter
                .check(key, one)
                .await
                .expect("Redis answers")
                .allowed
        );
        assert!(
            !limiter
                .check(key, one)
                .await
                .expect("Redis answers")
                .allowed
        );
    }
    for master in topology.masters() {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut connect(&master.url).await)
            .await
            .unwrap();
        assert!(
            info.lines()
                .any(|line| line.trim() == "number_of_cached_scripts:1"),
            "{}: {info}",
            master.url
        );
    }
}

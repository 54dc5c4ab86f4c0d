//! Real faults for the tests: a TCP forwarder on loopback that can refuse,
//! hang, cut or freeze connections.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::watch,
    task::AbortHandle,
};

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const HANG: u8 = 2;

/// One forwarded connection: its task, and the switch that freezes it.
struct Forwarded {
    task: AbortHandle,
    freeze: watch::Sender<bool>,
}

/// Forwards loopback connections to `upstream`. New connections pass, are
/// refused or hang (accepted, never answered); existing ones can be cut
/// (closed) or frozen: bytes stop flowing both ways while both sockets stay
/// open, as when a firewall silently drops a connection or a host vanishes.
pub struct Forwarder {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    connections: Arc<Mutex<Vec<Forwarded>>>,
}

impl Forwarder {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(PASS));
        let connections: Arc<Mutex<Vec<Forwarded>>> = Arc::default();
        let (accept_mode, accept_connections) = (mode.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    break;
                };
                let (freeze, frozen) = watch::channel(false);
                let task = match accept_mode.load(Ordering::SeqCst) {
                    REFUSE => {
                        drop(client);
                        continue;
                    }
                    HANG => tokio::spawn(async move {
                        let _held = client;
                        std::future::pending::<()>().await;
                    }),
                    _ => tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, frozen.clone()),
                            pump(server_read, client_write, frozen),
                        );
                    }),
                };
                accept_connections.lock().unwrap().push(Forwarded {
                    task: task.abort_handle(),
                    freeze,
                });
            }
        });
        Self {
            addr,
            mode,
            connections,
        }
    }

    /// The forwarder's address for `url` (a database URL whose host and port
    /// are replaced).
    pub fn url_for(&self, url: &str) -> String {
        let mut through: reqwest::Url = url.parse().unwrap();
        through.set_host(Some("127.0.0.1")).unwrap();
        through.set_port(Some(self.addr.port())).unwrap();
        through.to_string()
    }

    /// Closes every existing connection.
    pub fn drop_connections(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.task.abort();
        }
    }

    /// Freezes every existing connection without closing it; new ones are
    /// handled by the current mode.
    pub fn freeze_connections(&self) {
        for connection in self.connections.lock().unwrap().iter() {
            let _ = connection.freeze.send(true);
        }
    }

    /// Existing connections die, new ones are refused.
    pub fn cut(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
        self.drop_connections();
    }

    /// Existing connections keep working; new ones are refused.
    pub fn refuse_new(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
    }

    /// New connections are accepted and never answered; existing ones die.
    pub fn hang(&self) {
        self.mode.store(HANG, Ordering::SeqCst);
        self.drop_connections();
    }

    /// New connections pass; existing ones (frozen or hung) die.
    pub fn restore(&self) {
        self.drop_connections();
        self.mode.store(PASS, Ordering::SeqCst);
    }

    /// New connections pass; existing ones stay as they are.
    pub fn pass_new(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.drop_connections();
    }
}

/// Copies `from` to `to` until either closes; once frozen, holds both open
/// and moves nothing more.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = frozen.wait_for(|frozen| *frozen) => break,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if *frozen.borrow() {
                    break;
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _held = (from, to);
    std::future::pending::<()>().await;
}

/// The address of a database URL's server.
pub fn upstream_of(url: &str) -> SocketAddr {
    let url: reqwest::Url = url.parse().unwrap();
    let host = url.host_str().unwrap();
    let port = url.port().unwrap_or(match url.scheme() {
        "mysql" | "mariadb" => 3306,
        _ => 5432,
    });
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    SocketAddr::new(host.parse().unwrap(), port)
}

/// Waits up to `deadline` for `condition`, checking every 10 ms; the time it
/// took, or `None` if it never held.
pub async fn within(deadline: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let started = std::time::Instant::now();
    loop {
        if condition() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

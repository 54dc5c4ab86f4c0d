//! PostgreSQL topologies for the tests, made of real parts: a private cluster
//! (`initdb` in a temp dir, its own port) that a test can stop and start, a
//! streaming standby of it (`pg_basebackup -R`), and PgBouncer (Debian's
//! package) in front of any PostgreSQL, in transaction or session mode.
//!
//! PostgreSQL and PgBouncer refuse to run as root: when the tests do, these
//! run as the `postgres` user.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::server::free_port;

/// A private PostgreSQL cluster: `initdb` in a temp dir, its own port on
/// loopback, trust authentication; stopped (and removed) on drop. Run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses root).
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PgCluster {
    /// The directory of PostgreSQL's server binaries, if installed.
    pub fn binaries() -> Option<PathBuf> {
        let root = Path::new("/usr/lib/postgresql");
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    }

    /// A directory the `postgres` user owns when the tests run as root.
    fn owned_dir(prefix: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        give_to_postgres(dir.path());
        dir
    }

    /// Makes and starts a cluster; panics when PostgreSQL's server binaries
    /// are not installed.
    pub fn start() -> Self {
        let bin = Self::binaries().unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server binaries are not installed (no \
                 /usr/lib/postgresql/*/bin/initdb): this test needs them; install the \
                 PostgreSQL server package or run without `--include-ignored`"
            )
        });
        let cluster = Self {
            dir: Self::owned_dir("tak-pg-"),
            bin,
            port: free_port(),
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.configure();
        cluster.start_again();
        cluster
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), started, in
    /// hot standby: it answers reads and replays the primary's WAL.
    pub fn standby(&self) -> Self {
        let standby = Self {
            dir: Self::owned_dir("tak-pg-standby-"),
            bin: self.bin.clone(),
            port: free_port(),
        };
        standby.run(
            "pg_basebackup",
            &[
                "-D",
                &standby.data().display().to_string(),
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        standby.configure();
        standby.start_again();
        standby
    }

    /// Its own address and socket directory (appended: the last setting wins,
    /// over what a base backup copied from the primary).
    fn configure(&self) {
        use std::io::Write as _;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.data().join("postgresql.auto.conf"))
            .unwrap();
        write!(
            conf,
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n",
            self.port,
            self.dir.path().display()
        )
        .unwrap();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when root.
    fn run(&self, program: &str, args: &[&str]) {
        run_as_postgres(&self.bin.join(program), args, self.dir.path());
    }

    /// A URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// A URL of the cluster's database `database`.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the cluster (fast shutdown: sessions are ended).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-D", data.as_str(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// How PgBouncer hands out server connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
}

/// PgBouncer in front of the PostgreSQL at `127.0.0.1:upstream`, every
/// database (`* = …`), trust authentication for `postgres`, and nothing else
/// changed from the package's defaults (no `ignore_startup_parameters`, no
/// `max_prepared_statements`). Stopped on drop.
pub struct PgBouncer {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgBouncer {
    /// The installed `pgbouncer`, if any.
    pub fn binary() -> Option<PathBuf> {
        ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
    }

    /// Starts it; panics when PgBouncer is not installed.
    pub fn start(upstream: u16, mode: PoolMode) -> Self {
        let binary = Self::binary().unwrap_or_else(|| {
            panic!(
                "PgBouncer is not installed (no /usr/sbin/pgbouncer): this test needs it; \
                 install the `pgbouncer` package or run without `--include-ignored`"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("tak-pgbouncer-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={upstream}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {dir}\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = {mode}\n\
                 max_client_conn = 500\ndefault_pool_size = 20\n\
                 logfile = {log}\npidfile = {pid}\n",
                dir = dir.path().display(),
                users = path("users.txt"),
                mode = match mode {
                    PoolMode::Session => "session",
                    PoolMode::Transaction => "transaction",
                },
                log = path("pgbouncer.log"),
                pid = path("pgbouncer.pid"),
            ),
        )
        .unwrap();
        give_to_postgres(dir.path());
        run_as_postgres(&binary, &["-d", &path("pgbouncer.ini")], dir.path());
        let bouncer = Self { dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("PgBouncer did not listen on {port}: {}", bouncer.log());
    }

    /// A URL of database `database` through PgBouncer.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// What PgBouncer logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Hands `dir` to the `postgres` user when the tests run as root.
fn give_to_postgres(dir: &Path) {
    if running_as_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown of {}", dir.display());
    }
}

/// `program`, to be run as `postgres` when the tests run as root.
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Runs `program` with `args` in `dir` (as `postgres` when root), and checks
/// that it succeeded.
fn run_as_postgres(program: &Path, args: &[&str], dir: &Path) {
    let output = as_postgres(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

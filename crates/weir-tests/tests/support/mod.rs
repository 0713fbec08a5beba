//! Cluster mode with real processes on the machine's PostgreSQL (127.0.0.1:5432, or
//! `WEIR_TEST_POSTGRES`): a [`Cluster`] starts `serve` replicas, workers and clients of the
//! fixture binary in a schema of its own (dropped at the end). Shared by the cluster tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use weir_tests::wait_for;

pub const BIN: &str = env!("CARGO_BIN_EXE_fixture");

pub fn database() -> String {
    std::env::var("WEIR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn sql(statement: String) {
    let url = database();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("the cluster tests need PostgreSQL (set WEIR_TEST_POSTGRES)");
            tokio::spawn(conn);
            client.batch_execute(&statement).await.expect(&statement);
        })
    })
    .join()
    .unwrap();
}

/// Processes of one cluster, killed (and its schema dropped) at the end.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub schema: String,
    pub serves: Vec<(Child, String)>,
    pub others: Vec<Child>,
    pub n: usize,
    /// The database `serve` uses.
    pub database: String,
}

impl Cluster {
    pub fn new() -> Cluster {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            schema: format!(
                "c_{}_{}_{}",
                std::process::id(),
                nanos % 1_000_000_000,
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
            serves: Vec::new(),
            others: Vec::new(),
            n: 0,
            database: database(),
        }
    }

    pub fn state(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&mut self, what: &str) -> PathBuf {
        self.n += 1;
        self.state().join(format!("{what}-{}.log", self.n))
    }

    pub fn command(&self, args: &[&str], log: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--state-dir").arg(self.state()).args(args);
        let f = std::fs::File::create(log).unwrap();
        c.stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null());
        c
    }

    /// Starts a `serve` replica; returns its URL.
    pub fn serve(&mut self, extra: &[&str]) -> String {
        let log = self.log("serve");
        let db = self.database.clone();
        let mut args = vec!["serve", "--database", &db, "--schema", &self.schema];
        args.extend(["--listen", "127.0.0.1:0"]);
        args.extend(extra);
        let child = self.command(&args, &log).spawn().unwrap();
        let mut url = String::new();
        wait_for("serve listening", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Only a whole line: the line may be read while it is being written.
            match text
                .split("listening on ")
                .nth(1)
                .filter(|rest| rest.contains('\n'))
            {
                Some(rest) => {
                    url = rest.split_whitespace().next().unwrap().to_string();
                    true
                }
                None => false,
            }
        });
        self.serves.push((child, url.clone()));
        url
    }

    /// Starts a worker of `env` with `slots` slots against `servers`.
    pub fn worker(&mut self, servers: &str, env: &str, slots: &str) -> usize {
        let log = self.log("worker");
        let args = [
            "worker",
            "--server",
            servers,
            "--env",
            env,
            "--concurrency",
            slots,
        ];
        let child = self.command(&args, &log).spawn().unwrap();
        self.others.push(child);
        self.others.len() - 1
    }

    /// Starts a client command; its output goes to the returned log.
    pub fn client(&mut self, args: &[&str]) -> (Child, PathBuf) {
        let log = self.log("client");
        let child = self.command(args, &log).spawn().unwrap();
        (child, log)
    }

    /// Runs a client command to its end: (exit code, stdout, stderr).
    pub fn output(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state().join("cluster-token"))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self
            .others
            .iter_mut()
            .chain(self.serves.iter_mut().map(|(c, _)| c))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        sql(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
    }
}

/// Waits for a client to end; its exit code and log.
pub fn finish(child: &mut Child, log: &Path) -> (i32, String) {
    let mut code = None;
    wait_for("the client to end", || {
        code = child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
        code.is_some()
    });
    (code.unwrap(), std::fs::read_to_string(log).unwrap())
}

/// How many lines of `log` are exactly `line`.
pub fn count(log: &Path, line: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == line)
        .count()
}

/// A plain HTTP/1.0 GET; (status line, body).
pub fn http_get(url: &str, path: &str, token: Option<&str>) -> (String, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

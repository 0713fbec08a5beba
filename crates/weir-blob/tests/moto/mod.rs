//! A real S3-compatible server for tests: moto's `moto_server` (PyPI `moto[server]`), started
//! as a child process on a free port and killed when dropped. Requests of the tests themselves
//! (create a bucket, list, damage or delete an object) are plain HTTP with an `Authorization`
//! header that names the tests' key: moto checks no signature, but refuses anonymous reads of
//! objects. Shared by weir-blob's and weir-tests' S3 tests (`#[path]`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to get the server, for the failure message.
const INSTALL: &str = "python3 -m pip install 'moto[server]'";

/// The tests' access key and secret (any will do: moto checks no signature).
const KEY: &str = "weir-test";

/// An unsigned `Authorization` header with the tests' key.
const AUTHORIZATION: &str = "Authorization: AWS4-HMAC-SHA256 Credential=weir-test/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Moto {
    /// Starts `moto_server`, or `None` when `WEIR_SKIP_S3=1` asks to skip the S3 tests. A
    /// machine without it fails the test, saying how to install it: CI installs it.
    pub fn start() -> Option<Moto> {
        if std::env::var("WEIR_SKIP_S3").as_deref() == Ok("1") {
            eprintln!("WEIR_SKIP_S3=1: S3 test skipped");
            return None;
        }
        // A free port may be taken between the probe and moto's bind: try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "the S3 tests need moto's S3 server `moto_server` on the PATH: install it with `{INSTALL}` (or set WEIR_SKIP_S3=1 to skip them)"
                ),
                Err(e) => panic!("cannot start moto_server: {e}"),
            };
            let mut moto = Moto {
                child,
                addr: format!("127.0.0.1:{port}"),
            };
            if moto.wait_until_it_answers() {
                return Some(moto);
            }
        }
        panic!("moto_server did not start (5 tries); check `moto_server -p 5000` by hand");
    }

    /// Polls until the server answers a request; false when the process ends first.
    fn wait_until_it_answers(&mut self) -> bool {
        let t0 = Instant::now();
        loop {
            if self
                .child
                .try_wait()
                .expect("moto_server's status")
                .is_some()
            {
                return false;
            }
            if TcpStream::connect(&self.addr).is_ok() && self.try_request("GET", "/", b"").is_ok() {
                return true;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "moto_server on {} did not answer in 60 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `AWS_*` settings that reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let (status, _, body) = self.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "create bucket {bucket}: {body:?}");
    }

    /// The keys in a bucket, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, _, body) = self.request("GET", &format!("/{bucket}?list-type=2"), b"");
        assert_eq!(status, 200, "list {bucket}");
        let body = String::from_utf8(body).expect("an XML listing");
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .map(|rest| rest.split("</Key>").next().unwrap_or_default().to_string())
            .collect();
        keys.sort();
        keys
    }

    /// Writes an object (over the one there).
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let (status, _, _) = self.request("PUT", &format!("/{bucket}/{key}"), bytes);
        assert_eq!(status, 200, "put {bucket}/{key}");
    }

    /// Deletes an object.
    pub fn delete_object(&self, bucket: &str, key: &str) {
        let (status, _, _) = self.request("DELETE", &format!("/{bucket}/{key}"), b"");
        assert_eq!(status, 204, "delete {bucket}/{key}");
    }

    /// An object's `ETag` (a multipart upload's ends with `-PARTS"`) and size.
    pub fn head_object(&self, bucket: &str, key: &str) -> (String, u64) {
        let (status, headers, _) = self.request("HEAD", &format!("/{bucket}/{key}"), b"");
        assert_eq!(status, 200, "head {bucket}/{key}");
        let header = |name: &str| {
            headers
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no {name} in {headers}"))
        };
        (header("etag"), header("content-length").parse().unwrap())
    }

    /// One HTTP/1.1 request (connection closed after it): status, headers, body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path} on moto: {e}"))
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String, Vec<u8>)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n{AUTHORIZATION}\r\n\r\n",
            self.addr,
            body.len()
        )?;
        s.write_all(body)?;
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes)?;
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let mut body = bytes[split + 4..].to_vec();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = unchunk(&body);
        }
        Ok((status, head, body))
    }
}

/// The body of a chunked response.
fn unchunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    out
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

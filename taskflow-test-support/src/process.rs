//! A service binary as a child process, and plain HTTP to its health and metrics endpoints.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::PATIENCE;

/// A port nothing listens on right now, for a child process to bind. Taken below the kernel's
/// ephemeral range: a port from that range (what binding port 0 gives) can be taken by any
/// outgoing connection before the child binds it, which once failed a worker's start with
/// "Address already in use". Each call in this process tries the next port from a random start.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (low, span) = (10_000, ephemeral.saturating_sub(10_000).max(1));
    // The low bits of a UUIDv7 are random.
    let start = Uuid::now_v7().as_u128() as u32 % span;
    let _ = NEXT.compare_exchange(0, start + 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        if let Ok(port) = u16::try_from(port) {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over a fresh connection: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of metric `name` on `/metrics` whose labels include every one of `labels`.
pub fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "/metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{name}{labels:?} missing from /metrics:\n{body}"))
}

/// The sum of every sample of metric `name` (all its label sets) in a `/metrics` body.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// `kill <signal>` to `child` (e.g. `-STOP`); whether it was delivered.
pub fn send_signal(child: &Child, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A service as a child process with its output in a log file; killed if the test fails first.
pub struct Service {
    pub child: Child,
    /// Where its health and metrics server listens.
    pub addr: String,
    pub log: PathBuf,
}

impl Service {
    /// Start `binary` with `env`, its metrics server on a free port (`METRICS_ADDR`), logging to
    /// `log_dir/<name>.log`.
    pub fn start(binary: &str, name: &str, log_dir: &Path, env: &[(&str, &str)]) -> Service {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .envs(env.iter().copied())
            .env("METRICS_ADDR", &addr)
            .env("LOG_FORMAT", "pretty")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        Service { child, addr, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        assert!(send_signal(&self.child, signal), "kill {signal} failed");
    }

    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL: no clean-up, no goodbye to the group.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Poll until the process exits, at most `budget` after `since`.
    pub async fn exit_within(&mut self, budget: Duration, since: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if since.elapsed() > budget {
                panic!(
                    "the service did not exit within {budget:?}; log {}:\n{}",
                    self.log.display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until `path` answers `status` (the server starts with the service).
    pub async fn wait_for(&self, path: &str, status: u16) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match http_get(&self.addr, path) {
                Ok((s, body)) if s == status => return body,
                other if Instant::now() > deadline => {
                    panic!("{path}: {other:?}, wanted {status}\n{}", self.log())
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The `/metrics` body once it has a sample of `name`.
    pub async fn wait_for_metric(&self, name: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, body)) = http_get(&self.addr, "/metrics") {
                let sampled = body
                    .lines()
                    .any(|l| l.starts_with(name) && !l.starts_with('#'));
                if sampled {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {name} sample on /metrics\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `/health` and `/ready` answer 200.
    pub async fn assert_healthy(&self) {
        self.wait_for("/health", 200).await;
        self.wait_for("/ready", 200).await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Save `body` (a `/metrics` exposition) as `<service>.txt` in `TASKFLOW_METRICS_DIR` (default
/// `target/metrics` in the workspace), where the deploy checks compare the metric names the
/// alerts and dashboard use with what the services really export.
pub fn save_metrics(service: &str, body: &str) {
    let dir = std::env::var_os("TASKFLOW_METRICS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/metrics"));
    std::fs::create_dir_all(&dir).expect("metrics dump folder");
    std::fs::write(dir.join(format!("{service}.txt")), body).expect("metrics dump");
}

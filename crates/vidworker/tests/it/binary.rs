//! Running the real `vidworker` binary against a [`Stack`]: one-shot
//! commands, and `vidworker run` as a child process that tests can signal,
//! kill and read the log of.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Pid;
pub use rustix::process::Signal;

use crate::support::{BUCKET, Stack};

/// The binary under test.
const VIDWORKER: &str = env!("CARGO_BIN_EXE_vidworker");

impl Stack {
    /// Runs a one-shot `vidworker` command against this stack; returns
    /// (exit code, stdout, stderr).
    pub fn command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let out = Command::new(VIDWORKER)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env())
            .envs(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .output()
            .expect("vidworker runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The environment the real binary needs to run against this stack.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.database_url.clone()),
            ("SQS_QUEUE_URL", self.queue_url.clone()),
            ("S3_BUCKET", BUCKET.to_owned()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("VISIBILITY_TIMEOUT", self.visibility_timeout.as_secs().to_string()),
            ("RECEIVE_WAIT_SECONDS", "1".to_owned()),
            ("RETRY_BACKOFF", "1".to_owned()),
            ("WORKER_TEMP_DIR", self.work_dir.path().display().to_string()),
            ("RENDITION_PRESET", "veryfast".to_owned()),
            ("RENDITION_THREADS", "1".to_owned()),
            // One job at a time unless a test says otherwise, whatever
            // the machine's cores (the default is one per core).
            ("WORKER_CONCURRENCY", "1".to_owned()),
            ("UNKNOWN_VIDEO_PATIENCE", "3".to_owned()),
            // Tests run many workers at once; those that look at the
            // endpoints give their own port.
            ("METRICS_ADDR", "off".to_owned()),
            // Not EC2: no instance metadata to ask.
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts the real `vidworker run` against this stack, logging to a
    /// file in the work dir.
    pub fn spawn_binary(&self, name: &str, extra_env: &[(&str, &str)]) -> BinaryWorker {
        let log = self.work_dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(VIDWORKER)
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(self.env())
            .envs(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("vidworker starts");
        BinaryWorker { child, log }
    }
}

pub struct BinaryWorker {
    pub child: Child,
    pub log: PathBuf,
}

impl BinaryWorker {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` to the worker (our own unreaped child, so its pid cannot
    /// have been recycled).
    pub fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.pid()).expect("a child's pid is positive");
        rustix::process::kill_process(pid, sig).unwrap_or_else(|e| panic!("kill({sig:?}): {e}"));
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("vidworker did not exit within {limit:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines with this `event` field.
    pub fn events(&self, event: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .count()
    }
}

impl Drop for BinaryWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET on 127.0.0.1: (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The venv's Python, where the test tools (moto, prometheus_client) live.
pub fn venv_python() -> PathBuf {
    testkit::repo_root().join(".venv/bin/python")
}

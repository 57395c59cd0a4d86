//! Fault-injection proxies: [`TcpProxy`] in front of PostgreSQL and
//! [`HttpProxy`] in front of moto, both served by `crates/testkit/proxy.py`.
//!
//! Each handle runs one Python process (the script is compiled into this
//! crate and written to the handle's temporary directory, so the Rust API and
//! the script always match) with the same guarantees as the other servers:
//! forked by the spawner thread with a parent death signal, logging to a
//! file, killed and cleaned up on drop. The handle drives the proxy through a
//! small JSON control server on a second port; every control call is a
//! blocking round trip that takes effect before it returns. The calls go
//! through [ureq](https://docs.rs/ureq) (plain HTTP on 127.0.0.1, each call
//! bounded by [`CONTROL_TIMEOUT`]) with bodies and answers typed with serde
//! and serde_json; `proxy.py`'s docstring lists the routes.

mod http;
mod tcp;

use std::env;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use tempfile::TempDir;
use ureq::Agent;
use ureq::http::header::CONTENT_TYPE;
use ureq::http::{Method, Request, StatusCode};

use crate::process::{self, TiedCommand};
use crate::{free_port, repo_root};

pub use http::{Action, HttpProxy, Rule, RuleId};
pub use tcp::{TcpMode, TcpProxy};

/// The proxy program, written next to the log when a proxy starts.
const SCRIPT: &str = include_str!("../../proxy.py");
/// How long the proxy may take to answer after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts on fresh ports when another process takes a chosen port.
const PORT_ATTEMPTS: usize = 3;
/// Limit for one control call, connection included; the proxy answers them
/// at once.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// One running `proxy.py`.
#[derive(Debug)]
struct ProxyProcess {
    port: u16,
    control_port: u16,
    /// Holds the script and the log; `None` only during drop.
    dir: Option<TempDir>,
    server: Option<Child>,
    /// The control client.
    agent: Agent,
}

impl ProxyProcess {
    fn start(mode: &str, upstream: &str) -> io::Result<ProxyProcess> {
        let venv = env::var_os("VIDWORKER_VENV").map_or_else(|| repo_root().join(".venv"), PathBuf::from);
        let python = venv.join("bin").join("python");
        if !python.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "python not found at {}: run scripts/install-deps.sh (or set VIDWORKER_VENV to a venv)",
                    python.display()
                ),
            ));
        }
        let dir = tempfile::Builder::new().prefix("vidworker-proxy-").tempdir()?;
        let script = dir.path().join("proxy.py");
        fs::write(&script, SCRIPT)?;
        let mut proxy = ProxyProcess {
            port: 0,
            control_port: 0,
            dir: Some(dir),
            server: None,
            agent: control_agent(CONTROL_TIMEOUT),
        };
        let mut attempt = 1;
        loop {
            proxy.port = free_port()?;
            proxy.control_port = free_port()?;
            let mut cmd = TiedCommand::new(&python, None);
            cmd.arg(&script)
                .args(["--mode", mode, "--upstream", upstream])
                .args(["--listen", &proxy.port.to_string()])
                .args(["--control", &proxy.control_port.to_string()]);
            match proxy.launch(cmd, mode) {
                Ok(()) => return Ok(proxy),
                Err(_) if attempt < PORT_ATTEMPTS && proxy.port_was_taken() => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }

    fn launch(&mut self, mut cmd: TiedCommand, mode: &str) -> io::Result<()> {
        let log_path = self.log_path();
        let log = process::open_log(&log_path, true)?;
        // Unbuffered, so the log is complete when start-up fails.
        cmd.env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir.path());
        }
        let server = cmd.spawn()?;
        let what = format!("{mode} proxy on 127.0.0.1:{}", self.port);
        let server = process::await_ready(
            server,
            &what,
            &format!("answer GET /health on 127.0.0.1:{}", self.control_port),
            START_TIMEOUT,
            &log_path,
            || self.control_done(Method::GET, "/health", None).is_ok(),
        )?;
        self.server = Some(server);
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |dir| dir.path().join("proxy.log"))
    }

    fn port_was_taken(&self) -> bool {
        fs::read_to_string(self.log_path()).is_ok_and(|log| log.contains("Address already in use"))
    }

    /// One control call with `body` (JSON), if any: the answer as `T`, or
    /// an error that names the call and quotes the proxy's message.
    fn control<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> io::Result<T> {
        let failed = |reason: String| io::Error::other(format!("proxy control {method} {path}: {reason}"));
        let (status, text) = self
            .round_trip(method.clone(), path, body)
            .map_err(|err| failed(format!("{err} (see {})", self.log_path().display())))?;
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorAnswer>(&text).map_or(text, |answer| answer.error);
            return Err(failed(format!("{status} {message}")));
        }
        serde_json::from_str(&text).map_err(|err| failed(format!("unexpected answer ({err}): {text:?}")))
    }

    /// A control call whose answer says nothing beyond its success.
    fn control_done(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> io::Result<()> {
        self.control::<IgnoredAny>(method, path, body).map(drop)
    }

    /// Sends one request to the control server; returns the status and the
    /// body.
    fn round_trip(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, String), ureq::Error> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.control_port));
        let mut response = match body {
            Some(json) => self
                .agent
                .run(request.header(CONTENT_TYPE, "application/json").body(json)?)?,
            None => self.agent.run(request.body(())?)?,
        };
        let text = response.body_mut().read_to_string()?;
        Ok((response.status(), text))
    }
}

/// The client for control calls: plain HTTP/1.1, a whole call (connection
/// included) bounded by `timeout`.
fn control_agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .timeout_global(Some(timeout))
        // An error status comes with a message to quote.
        .http_status_as_error(false)
        // Loopback only: never through a proxy named in the environment.
        .proxy(None)
        .build()
        .into()
}

/// The control server's answer to a call it refused.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: String,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = process::terminate(&mut server, Signal::KILL, Duration::ZERO);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};
    use std::time::{Duration, Instant};

    use super::control_agent;

    #[test]
    fn a_control_call_to_a_silent_server_times_out() -> std::io::Result<()> {
        // Connections complete in the backlog; nothing ever answers.
        let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let url = format!("http://{}/health", silent.local_addr()?);
        let started = Instant::now();
        let result = control_agent(Duration::from_millis(200)).get(&url).call();
        let waited = started.elapsed();
        assert!(
            matches!(result, Err(ureq::Error::Timeout(_))),
            "{result:?} after {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "gave up only after {waited:?}");
        Ok(())
    }
}

//! [`TcpProxy`]: `proxy.py --mode tcp` in front of PostgreSQL.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ureq::http::Method;

use super::ProxyProcess;

/// What a [`TcpProxy`] does with the bytes of new and existing connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpMode {
    /// Forward bytes both ways.
    Pass,
    /// Close new connections at once and reset every open one, like a server
    /// that went away (clients see a reset or end of stream, not a refused
    /// connect: the proxy's port stays open).
    Refuse,
    /// Accept new connections but never connect them upstream; on open ones,
    /// read and drop whatever either side sends. Clients hang until their
    /// own timeouts. Leaving this mode closes every connection that was open
    /// while it lasted (their byte streams lost data, so they cannot be
    /// resumed).
    Blackhole,
    /// Forward, but hold every chunk for this long (millisecond resolution),
    /// in each direction: a request/response round trip takes at least twice
    /// the delay.
    Delay(Duration),
}

/// A TCP proxy on 127.0.0.1 in front of a local server (PostgreSQL), whose
/// behaviour a test switches with [`set_mode`](Self::set_mode) to simulate
/// a database that vanishes, stops answering or turns slow.
///
/// It starts in [`TcpMode::Pass`]. Dropping the handle kills the proxy, which
/// closes every connection through it.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use testkit::{Postgres, TcpMode, TcpProxy};
///
/// # fn main() -> std::io::Result<()> {
/// let db = Postgres::start()?;
/// let proxy = TcpProxy::start(db.port())?;
/// let database_url = proxy.url_for(&db.create_database("jobs")?);
/// // ... the code under test connects to database_url ...
/// proxy.set_mode(TcpMode::Blackhole)?; // queries now hang
/// proxy.set_mode(TcpMode::Delay(Duration::from_millis(200)))?;
/// proxy.set_mode(TcpMode::Pass)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TcpProxy {
    process: ProxyProcess,
    upstream_port: u16,
}

impl TcpProxy {
    /// Starts a proxy on a free port that forwards to `127.0.0.1:upstream_port`,
    /// and blocks until it answers (a fraction of a second).
    pub fn start(upstream_port: u16) -> io::Result<TcpProxy> {
        let process = ProxyProcess::start("tcp", &format!("127.0.0.1:{upstream_port}"))?;
        Ok(TcpProxy { process, upstream_port })
    }

    /// The port clients connect to instead of the server's.
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// The port of the server behind the proxy.
    pub fn upstream_port(&self) -> u16 {
        self.upstream_port
    }

    /// `database_url` with its host and port replaced by the proxy's
    /// (`127.0.0.1:PORT`); user, database and parameters are kept:
    /// `postgres://postgres@127.0.0.1:5432/jobs` becomes
    /// `postgres://postgres@127.0.0.1:{port}/jobs`.
    pub fn url_for(&self, database_url: &str) -> String {
        replace_authority_host(database_url, &format!("127.0.0.1:{}", self.port()))
    }

    /// Switches the proxy's behaviour for new and existing connections; in
    /// effect when this returns.
    pub fn set_mode(&self, mode: TcpMode) -> io::Result<()> {
        let body = serde_json::to_vec(&ModeSpec::from(mode))?;
        self.process.control_done(Method::POST, "/mode", Some(body))
    }

    /// The number of client connections open through the proxy right now.
    pub fn connections(&self) -> io::Result<usize> {
        let state: TcpState = self.process.control(Method::GET, "/state", None)?;
        Ok(state.connections)
    }

    /// The proxy's log: mode changes and upstream failures (deleted on drop).
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path()
    }
}

/// The body of `POST /mode`: `{"mode": "delay", "delay_ms": 200}`.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
enum ModeSpec {
    Pass,
    Refuse,
    Blackhole,
    Delay {
        /// Rounded up, so that a delay is never dropped.
        delay_ms: u64,
    },
}

impl From<TcpMode> for ModeSpec {
    fn from(mode: TcpMode) -> ModeSpec {
        match mode {
            TcpMode::Pass => ModeSpec::Pass,
            TcpMode::Refuse => ModeSpec::Refuse,
            TcpMode::Blackhole => ModeSpec::Blackhole,
            TcpMode::Delay(delay) => ModeSpec::Delay {
                delay_ms: u64::try_from(delay.as_micros().div_ceil(1000)).unwrap_or(u64::MAX),
            },
        }
    }
}

/// The part of `GET /state`'s answer that the handle reads.
#[derive(Debug, Deserialize)]
struct TcpState {
    connections: usize,
}

/// Replaces `host[:port]` in a URL's authority (after `scheme://` and any
/// `user@`), keeping everything else.
fn replace_authority_host(url: &str, host_port: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    format!("{}{host_port}{}", &url[..host_start], &url[end..])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::{ModeSpec, TcpMode, replace_authority_host};

    #[test]
    fn url_authority_is_replaced_and_the_rest_kept() {
        let proxy = "127.0.0.1:7000";
        for (url, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/jobs",
                "postgres://postgres@127.0.0.1:7000/jobs",
            ),
            (
                "postgresql://user:p%40ss@localhost/jobs?sslmode=disable",
                "postgresql://user:p%40ss@127.0.0.1:7000/jobs?sslmode=disable",
            ),
            ("postgres://[::1]:5432", "postgres://127.0.0.1:7000"),
            (
                "postgres://db:5432?application_name=x",
                "postgres://127.0.0.1:7000?application_name=x",
            ),
        ] {
            assert_eq!(replace_authority_host(url, proxy), expected, "for {url}");
        }
    }

    #[test]
    fn modes_serialise_for_the_control_api() -> serde_json::Result<()> {
        for (mode, expected) in [
            (TcpMode::Pass, json!({"mode": "pass"})),
            (TcpMode::Refuse, json!({"mode": "refuse"})),
            (TcpMode::Blackhole, json!({"mode": "blackhole"})),
            (
                TcpMode::Delay(Duration::from_millis(200)),
                json!({"mode": "delay", "delay_ms": 200}),
            ),
            // Millisecond resolution, rounded up: a delay is never dropped.
            (
                TcpMode::Delay(Duration::from_micros(1)),
                json!({"mode": "delay", "delay_ms": 1}),
            ),
            (
                TcpMode::Delay(Duration::from_micros(1_500)),
                json!({"mode": "delay", "delay_ms": 2}),
            ),
        ] {
            assert_eq!(serde_json::to_value(ModeSpec::from(mode))?, expected, "for {mode:?}");
        }
        Ok(())
    }
}

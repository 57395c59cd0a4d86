//! Fault-injection proxies: [`TcpProxy`] in front of PostgreSQL and
//! [`HttpProxy`] in front of moto, both served by `crates/testkit/proxy.py`.
//!
//! Each handle runs one Python process (the script is compiled into this
//! crate and written to the handle's temporary directory, so the Rust API and
//! the script always match) with the same guarantees as the other servers:
//! forked by the spawner thread with `PR_SET_PDEATHSIG`, logging to a file,
//! killed and cleaned up on drop. The handle drives the proxy through a small
//! JSON control server on a second port; every control call is a blocking
//! round trip that takes effect before it returns.

use std::env;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tempfile::TempDir;

use crate::process::{self, TiedCommand};
use crate::{free_port, repo_root};

/// The proxy program, written next to the log when a proxy starts.
const SCRIPT: &str = include_str!("../proxy.py");
/// How long the proxy may take to answer after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts on fresh ports when another process takes a chosen port.
const PORT_ATTEMPTS: usize = 3;
/// Limit for one control call; the proxy answers them at once.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

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
        let body = match mode {
            TcpMode::Pass => r#"{"mode": "pass"}"#.to_owned(),
            TcpMode::Refuse => r#"{"mode": "refuse"}"#.to_owned(),
            TcpMode::Blackhole => r#"{"mode": "blackhole"}"#.to_owned(),
            TcpMode::Delay(delay) => {
                format!(
                    r#"{{"mode": "delay", "delay_ms": {}}}"#,
                    delay.as_micros().div_ceil(1000)
                )
            }
        };
        self.process.control("POST", "/mode", Some(&body)).map(drop)
    }

    /// The number of client connections open through the proxy right now.
    pub fn connections(&self) -> io::Result<usize> {
        let state = self.process.control("GET", "/state", None)?;
        usize_field(&state, "connections")
    }

    /// The proxy's log: mode changes and upstream failures (deleted on drop).
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path()
    }
}

/// What an [`HttpProxy`] does with the requests a [`Rule`] matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer `503 ServiceUnavailable` in the service's error format without
    /// forwarding. The AWS SDK retries 5xx answers (3 attempts by default),
    /// so a rule must fail at least that many requests for the error to
    /// reach the caller.
    Fail,
    /// Answer this status and error code instead, e.g. `403 AccessDenied`
    /// (see [`Action::fail_with`]).
    FailWith {
        /// The HTTP status, e.g. 403.
        status: u16,
        /// The service error code, e.g. `AccessDenied`.
        code: String,
    },
    /// Never answer: the connection stays open until the rule is released or
    /// removed (then it is closed) or the proxy stops.
    Hang,
    /// Keep the request until the rule is released or removed, then forward
    /// it and relay the response (forwarded even if the client gave up
    /// meanwhile, like a request that was slow on the network).
    HoldRequest,
    /// Forward the request at once, so the upstream acts on it, and read the
    /// whole response; relay it only when the rule is released or removed.
    /// A request counts as [`held`](HttpProxy::held) once the upstream has
    /// answered.
    HoldResponse,
}

impl Action {
    /// [`Action::FailWith`]: answer `status` with the service error `code`.
    pub fn fail_with(status: u16, code: impl Into<String>) -> Action {
        Action::FailWith {
            status,
            code: code.into(),
        }
    }

    /// The action's name in [`HttpProxy::requests`].
    fn name(&self) -> &'static str {
        match self {
            Action::Fail | Action::FailWith { .. } => "fail",
            Action::Hang => "hang",
            Action::HoldRequest => "hold_request",
            Action::HoldResponse => "hold_response",
        }
    }
}

/// A fault for an [`HttpProxy`] to inject: which requests, what to do, how
/// many times.
///
/// A rule matches a request whose operation name (see [`HttpProxy`]) starts
/// with its prefix; rules are tried in the order they were added and the
/// first active match wins.
///
/// ```
/// use testkit::{Action, Rule};
///
/// let rule = Rule::new("sqs:DeleteMessage").action(Action::Fail).times(3);
/// let upload = Rule::new("s3:PUT /bucket/processed/").action(Action::HoldResponse);
/// # let _ = (rule, upload);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    prefix: String,
    action: Action,
    times: Option<u32>,
}

impl Rule {
    /// A rule for requests whose operation name starts with `prefix`, e.g.
    /// `sqs:ReceiveMessage` or `s3:PUT /bucket/processed/`. Its action is
    /// [`Action::Fail`] until [`action`](Self::action) says otherwise, and it
    /// applies to every matching request until [`times`](Self::times) limits
    /// it.
    pub fn new(prefix: impl Into<String>) -> Rule {
        Rule {
            prefix: prefix.into(),
            action: Action::Fail,
            times: None,
        }
    }

    /// What to do with matching requests.
    pub fn action(mut self, action: Action) -> Rule {
        self.action = action;
        self
    }

    /// Applies the rule to the next `times` matching requests only; then it
    /// expires and later requests go on to the next rule. What it already
    /// holds stays held until released.
    pub fn times(mut self, times: u32) -> Rule {
        self.times = Some(times);
        self
    }

    fn to_json(&self) -> String {
        let times = self.times.map_or_else(|| "null".to_owned(), |n| n.to_string());
        let (status, code) = match &self.action {
            Action::FailWith { status, code } => (status.to_string(), json::quote(code)),
            _ => ("null".to_owned(), "null".to_owned()),
        };
        format!(
            r#"{{"match": {}, "action": {}, "times": {times}, "status": {status}, "code": {code}}}"#,
            json::quote(&self.prefix),
            json::quote(self.action.name()),
        )
    }
}

/// Names a rule of one [`HttpProxy`], as returned by
/// [`add_rule`](HttpProxy::add_rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

/// An HTTP/1.1 reverse proxy on 127.0.0.1 in front of moto that injects S3
/// and SQS faults by [`Rule`]: error answers, requests that never get an
/// answer, requests or responses held until the test releases them.
///
/// Point the code under test at [`endpoint`](Self::endpoint) instead of
/// [`Moto::endpoint`](crate::Moto::endpoint). Requests are forwarded as they
/// are, `Host` header included (so moto's SQS queue URLs point at the
/// proxy); bodies keep their bytes (`aws-chunked` included) and are re-framed
/// with `Content-Length`. Client connections are kept alive; each request
/// gets a fresh upstream connection and no upstream timeout (SQS long polls
/// work). When moto cannot be reached the proxy answers `502 BadGateway`.
///
/// Every request gets an operation name, logged in
/// [`requests`](Self::requests) and matched against the rules:
/// - SQS JSON protocol: `sqs:` and the `X-Amz-Target` operation,
///   `AmazonSQS.ReceiveMessage` → `sqs:ReceiveMessage`;
/// - query protocol (form body or query string with `Action=`):
///   `sqs:` and the action;
/// - anything else (S3): `s3:METHOD TARGET`, the target as sent, query string
///   included: `s3:PUT /bucket/processed/a.mp4?x-id=PutObject` (the AWS SDK
///   adds `x-id` to most object operations, so match on a prefix that stops
///   before the `?`).
///
/// The service part comes from the SigV4 credential scope when the request
/// is signed (so `autoscaling:CompleteLifecycleAction` is named right), else
/// it is guessed as above.
///
/// Dropping the handle kills the proxy, which closes every connection
/// through it (held and hung requests included).
///
/// # Example
///
/// ```no_run
/// use testkit::{Action, HttpProxy, Moto, Rule};
///
/// # fn main() -> std::io::Result<()> {
/// let moto = Moto::start()?;
/// let proxy = HttpProxy::start(&moto.endpoint())?;
/// // AWS_ENDPOINT_URL = proxy.endpoint() for the code under test.
/// let upload = proxy.add_rule(Rule::new("s3:PUT /bucket/processed/").action(Action::HoldResponse))?;
/// // ... start the upload ...
/// proxy.wait_held(upload, 1, std::time::Duration::from_secs(10))?; // stored in moto, not yet acknowledged
/// proxy.release(upload)?;
/// assert_eq!(proxy.count("s3:PUT /bucket/processed/")?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct HttpProxy {
    process: ProxyProcess,
    upstream: String,
}

impl HttpProxy {
    /// Starts a proxy on a free port that forwards to `upstream`
    /// (`http://HOST:PORT`, e.g. [`Moto::endpoint`](crate::Moto::endpoint)),
    /// and blocks until it answers (a fraction of a second).
    pub fn start(upstream: &str) -> io::Result<HttpProxy> {
        let process = ProxyProcess::start("http", upstream)?;
        Ok(HttpProxy {
            process,
            upstream: upstream.to_owned(),
        })
    }

    /// The endpoint URL for the AWS SDK: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// The URL requests are forwarded to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Adds `rule` after the existing ones.
    pub fn add_rule(&self, rule: Rule) -> io::Result<RuleId> {
        let answer = self.process.control("POST", "/rules", Some(&rule.to_json()))?;
        let id = answer
            .get("id")
            .and_then(json::Value::as_u64)
            .ok_or_else(|| invalid_answer("POST /rules", &answer))?;
        Ok(RuleId(id))
    }

    /// Releases what the rule holds (see [`release`](Self::release)) and
    /// removes it.
    pub fn remove_rule(&self, id: RuleId) -> io::Result<()> {
        self.process
            .control("DELETE", &format!("/rules/{}", id.0), None)
            .map(drop)
    }

    /// Lets every request the rule holds or hangs go on (held ones are
    /// forwarded or answered, hung connections are closed) and disables the
    /// rule: later requests skip it. [`held`](Self::held) keeps working.
    pub fn release(&self, id: RuleId) -> io::Result<()> {
        self.process
            .control("POST", &format!("/rules/{}/release", id.0), None)
            .map(drop)
    }

    /// How many requests the rule holds or hangs right now.
    pub fn held(&self, id: RuleId) -> io::Result<usize> {
        let rule = self.process.control("GET", &format!("/rules/{}", id.0), None)?;
        usize_field(&rule, "held")
    }

    /// Waits until the rule holds at least `count` requests, e.g. until the
    /// worker's upload is parked in the proxy. Fails with
    /// [`io::ErrorKind::TimedOut`] after `timeout`.
    pub fn wait_held(&self, id: RuleId, count: usize, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let held = self.held(id)?;
            if held >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "rule {} held {held} request(s), not {count}, after {timeout:?}; requests seen: {:?}",
                        id.0,
                        self.requests().unwrap_or_default()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Releases and removes every rule and empties the request log: a plain
    /// pass-through again.
    pub fn clear(&self) -> io::Result<()> {
        self.process.control("DELETE", "/rules", None)?;
        self.process.control("DELETE", "/requests", None).map(drop)
    }

    /// Every request seen since start (or [`clear`](Self::clear)), in
    /// arrival order, as `"<operation> <action>"` where the action is `pass`,
    /// `fail`, `hang`, `hold_request` or `hold_response`:
    /// `"sqs:DeleteMessage fail"`, `"s3:GET /bucket/a.mp4?x-id=GetObject pass"`.
    /// A request is logged as soon as it is fully received, before its
    /// action runs.
    pub fn requests(&self) -> io::Result<Vec<String>> {
        let answer = self.process.control("GET", "/requests", None)?;
        answer
            .as_array()
            .and_then(|items| items.iter().map(|item| item.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| invalid_answer("GET /requests", &answer))
    }

    /// How many logged [`requests`](Self::requests) start with `prefix`
    /// (an operation prefix, or `"<operation> <action>"`).
    pub fn count(&self, prefix: &str) -> io::Result<usize> {
        Ok(self
            .requests()?
            .iter()
            .filter(|request| request.starts_with(prefix))
            .count())
    }

    /// The proxy's log: one line per request with its action, rule changes
    /// and upstream failures (deleted on drop).
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path()
    }
}

/// One running `proxy.py`.
#[derive(Debug)]
struct ProxyProcess {
    port: u16,
    control_port: u16,
    /// Holds the script and the log; `None` only during drop.
    dir: Option<TempDir>,
    server: Option<Child>,
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
        let control_port = self.control_port;
        let what = format!("{mode} proxy on 127.0.0.1:{}", self.port);
        self.server = Some(process::await_ready(
            server,
            &what,
            &format!("answer GET /health on 127.0.0.1:{control_port}"),
            START_TIMEOUT,
            &log_path,
            || control_request(control_port, "GET", "/health", None).is_ok_and(|(status, _)| status == 200),
        )?);
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

    /// One control call: the parsed JSON answer, or an error that quotes the
    /// proxy's message.
    fn control(&self, method: &str, path: &str, body: Option<&str>) -> io::Result<json::Value> {
        let failed = |reason: String| io::Error::other(format!("proxy control {method} {path}: {reason}"));
        let (status, text) = control_request(self.control_port, method, path, body)
            .map_err(|err| failed(format!("{err} (see {})", self.log_path().display())))?;
        let value = json::parse(&text).map_err(|err| failed(format!("invalid JSON answer ({err}): {text:?}")))?;
        if !(200..300).contains(&status) {
            let message = value.get("error").and_then(json::Value::as_str).unwrap_or(&text);
            return Err(failed(format!("{status} {message}")));
        }
        Ok(value)
    }
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

/// Sends one request to the control server and returns the status and body.
fn control_request(port: u16, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), CONTROL_TIMEOUT)?;
    stream.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    stream.set_write_timeout(Some(CONTROL_TIMEOUT))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // The control server speaks HTTP/1.0: the answer ends with the connection.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP answer: {head:?}")))?;
    Ok((status, body.to_owned()))
}

fn usize_field(value: &json::Value, field: &str) -> io::Result<usize> {
    value
        .get(field)
        .and_then(json::Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| invalid_answer(field, value))
}

fn invalid_answer(what: &str, value: &json::Value) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected proxy answer for {what}: {value:?}"),
    )
}

/// Replaces `host[:port]` in a URL's authority (after `scheme://` and any
/// `user@`), keeping everything else.
fn replace_authority_host(url: &str, host_port: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    format!("{}{host_port}{}", &url[..host_start], &url[end..])
}

/// Just enough JSON for the control API's answers.
mod json {
    use std::fmt::Write as _;

    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        pub(super) fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(fields) => fields.iter().find(|(name, _)| name == key).map(|(_, value)| value),
                _ => None,
            }
        }

        pub(super) fn as_u64(&self) -> Option<u64> {
            match *self {
                // Exact for every integer the proxy sends (< 2^53).
                Value::Number(n) if n >= 0.0 && n.fract() == 0.0 && n < 9_007_199_254_740_992.0 => Some(n as u64),
                _ => None,
            }
        }

        pub(super) fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(text) => Some(text),
                _ => None,
            }
        }

        pub(super) fn as_array(&self) -> Option<&[Value]> {
            match self {
                Value::Array(items) => Some(items),
                _ => None,
            }
        }
    }

    /// `text` as a JSON string literal.
    pub(super) fn quote(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    pub(super) fn parse(text: &str) -> Result<Value, String> {
        let mut parser = Parser { text, pos: 0 };
        let value = parser.value(0)?;
        parser.skip_space();
        if parser.pos != text.len() {
            return Err(format!("trailing characters at {}", parser.pos));
        }
        Ok(value)
    }

    struct Parser<'a> {
        text: &'a str,
        pos: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.text.as_bytes().get(self.pos).copied()
        }

        fn skip_space(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }

        fn expect(&mut self, byte: u8) -> Result<(), String> {
            self.skip_space();
            if self.peek() == Some(byte) {
                self.pos += 1;
                Ok(())
            } else {
                Err(format!("expected {:?} at {}", char::from(byte), self.pos))
            }
        }

        fn keyword(&mut self, word: &str, value: Value) -> Result<Value, String> {
            if self.text[self.pos..].starts_with(word) {
                self.pos += word.len();
                Ok(value)
            } else {
                Err(format!("unexpected token at {}", self.pos))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value, String> {
            if depth > 64 {
                return Err("nested too deeply".to_owned());
            }
            self.skip_space();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let mut fields = Vec::new();
                    self.skip_space();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Value::Object(fields));
                    }
                    loop {
                        self.expect(b'"')?;
                        let name = self.string()?;
                        self.expect(b':')?;
                        fields.push((name, self.value(depth + 1)?));
                        self.skip_space();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                return Ok(Value::Object(fields));
                            }
                            _ => return Err(format!("expected ',' or '}}' at {}", self.pos)),
                        }
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    let mut items = Vec::new();
                    self.skip_space();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.skip_space();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                return Ok(Value::Array(items));
                            }
                            _ => return Err(format!("expected ',' or ']' at {}", self.pos)),
                        }
                    }
                }
                Some(b'"') => {
                    self.pos += 1;
                    self.string().map(Value::String)
                }
                Some(b't') => self.keyword("true", Value::Bool(true)),
                Some(b'f') => self.keyword("false", Value::Bool(false)),
                Some(b'n') => self.keyword("null", Value::Null),
                Some(b'-' | b'0'..=b'9') => {
                    let start = self.pos;
                    while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                        self.pos += 1;
                    }
                    let number = &self.text[start..self.pos];
                    number
                        .parse()
                        .map(Value::Number)
                        .map_err(|_| format!("bad number {number:?}"))
                }
                _ => Err(format!("unexpected token at {}", self.pos)),
            }
        }

        /// The rest of a string whose opening quote was consumed.
        fn string(&mut self) -> Result<String, String> {
            let mut out = String::new();
            loop {
                let rest = &self.text[self.pos..];
                let Some(special) = rest.find(['"', '\\']) else {
                    return Err("unterminated string".to_owned());
                };
                out.push_str(&rest[..special]);
                self.pos += special + 1;
                if rest.as_bytes()[special] == b'"' {
                    return Ok(out);
                }
                let escape = self.peek().ok_or("unterminated escape")?;
                self.pos += 1;
                match escape {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let high = self.hex4()?;
                        let code = if (0xD800..0xDC00).contains(&high) && self.text[self.pos..].starts_with("\\u") {
                            self.pos += 2;
                            let low = self.hex4()?;
                            0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
                        } else {
                            high
                        };
                        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    other => return Err(format!("bad escape \\{}", char::from(other))),
                }
            }
        }

        fn hex4(&mut self) -> Result<u32, String> {
            let digits = self.text.get(self.pos..self.pos + 4).ok_or("short \\u escape")?;
            self.pos += 4;
            u32::from_str_radix(digits, 16).map_err(|_| format!("bad \\u escape {digits:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json::{self, Value};
    use super::{Action, Rule, replace_authority_host};

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
    fn json_answers_parse() {
        let value = json::parse(
            r#" {"id": 3, "held": 0, "ok": true, "x": null, "list": ["a \"b\"", "\u00e9\ud83d\ude00\n"]} "#,
        )
        .expect("valid JSON");
        assert_eq!(value.get("id").and_then(Value::as_u64), Some(3));
        assert_eq!(value.get("held").and_then(Value::as_u64), Some(0));
        assert_eq!(value.get("ok"), Some(&Value::Bool(true)));
        let list: Vec<&str> = value
            .get("list")
            .and_then(Value::as_array)
            .expect("an array")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(list, ["a \"b\"", "é😀\n"]);
        assert!(json::parse("[1,").is_err());
        assert!(json::parse("{} x").is_err());
        assert_eq!(json::parse("-1.5").expect("a number"), Value::Number(-1.5));
    }

    #[test]
    fn rules_serialise_for_the_control_api() {
        let rule = Rule::new("s3:PUT /b/\"q\"")
            .action(Action::fail_with(403, "AccessDenied"))
            .times(2);
        let value = json::parse(&rule.to_json()).expect("valid JSON");
        assert_eq!(value.get("match").and_then(Value::as_str), Some("s3:PUT /b/\"q\""));
        assert_eq!(value.get("action").and_then(Value::as_str), Some("fail"));
        assert_eq!(value.get("times").and_then(Value::as_u64), Some(2));
        assert_eq!(value.get("status").and_then(Value::as_u64), Some(403));
        assert_eq!(value.get("code").and_then(Value::as_str), Some("AccessDenied"));
        let hang = json::parse(&Rule::new("sqs:").action(Action::Hang).to_json()).expect("valid JSON");
        assert_eq!(hang.get("times"), Some(&Value::Null));
        assert_eq!(hang.get("action").and_then(Value::as_str), Some("hang"));
    }
}

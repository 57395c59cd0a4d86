//! [`HttpProxy`] and its [`Rule`]s: `proxy.py --mode http` in front of moto.

use std::io;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ureq::http::Method;

use super::ProxyProcess;

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

    /// The body of `POST /rules`.
    fn spec(&self) -> RuleSpec<'_> {
        let (status, code) = match &self.action {
            Action::FailWith { status, code } => (Some(*status), Some(code.as_str())),
            Action::Fail | Action::Hang | Action::HoldRequest | Action::HoldResponse => (None, None),
        };
        RuleSpec {
            prefix: &self.prefix,
            action: self.action.name(),
            times: self.times,
            status,
            code,
        }
    }
}

/// The body of `POST /rules`; absent values are sent as `null`.
#[derive(Debug, Serialize)]
struct RuleSpec<'a> {
    #[serde(rename = "match")]
    prefix: &'a str,
    action: &'static str,
    times: Option<u32>,
    status: Option<u16>,
    code: Option<&'a str>,
}

/// The answer to `POST /rules`.
#[derive(Debug, Deserialize)]
struct Created {
    id: u64,
}

/// The part of `GET /rules/ID`'s answer that the handle reads.
#[derive(Debug, Deserialize)]
struct RuleState {
    held: usize,
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
        let body = serde_json::to_vec(&rule.spec())?;
        let created: Created = self.process.control(Method::POST, "/rules", Some(body))?;
        Ok(RuleId(created.id))
    }

    /// Releases what the rule holds (see [`release`](Self::release)) and
    /// removes it.
    pub fn remove_rule(&self, id: RuleId) -> io::Result<()> {
        self.process
            .control_done(Method::DELETE, &format!("/rules/{}", id.0), None)
    }

    /// Lets every request the rule holds or hangs go on (held ones are
    /// forwarded or answered, hung connections are closed) and disables the
    /// rule: later requests skip it. [`held`](Self::held) keeps working.
    pub fn release(&self, id: RuleId) -> io::Result<()> {
        self.process
            .control_done(Method::POST, &format!("/rules/{}/release", id.0), None)
    }

    /// How many requests the rule holds or hangs right now.
    pub fn held(&self, id: RuleId) -> io::Result<usize> {
        let rule: RuleState = self.process.control(Method::GET, &format!("/rules/{}", id.0), None)?;
        Ok(rule.held)
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
        self.process.control_done(Method::DELETE, "/rules", None)?;
        self.process.control_done(Method::DELETE, "/requests", None)
    }

    /// Every request seen since start (or [`clear`](Self::clear)), in
    /// arrival order, as `"<operation> <action>"` where the action is `pass`,
    /// `fail`, `hang`, `hold_request` or `hold_response`:
    /// `"sqs:DeleteMessage fail"`, `"s3:GET /bucket/a.mp4?x-id=GetObject pass"`.
    /// A request is logged as soon as it is fully received, before its
    /// action runs.
    pub fn requests(&self) -> io::Result<Vec<String>> {
        self.process.control(Method::GET, "/requests", None)
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Action, Created, Rule, RuleState};

    #[test]
    fn rules_serialise_for_the_control_api() -> serde_json::Result<()> {
        let rule = Rule::new("s3:PUT /b/\"q\"")
            .action(Action::fail_with(403, "AccessDenied"))
            .times(2);
        assert_eq!(
            serde_json::to_value(rule.spec())?,
            json!({"match": "s3:PUT /b/\"q\"", "action": "fail", "times": 2, "status": 403, "code": "AccessDenied"})
        );
        for (action, name) in [
            (Action::Fail, "fail"),
            (Action::Hang, "hang"),
            (Action::HoldRequest, "hold_request"),
            (Action::HoldResponse, "hold_response"),
        ] {
            assert_eq!(
                serde_json::to_value(Rule::new("sqs:").action(action).spec())?,
                json!({"match": "sqs:", "action": name, "times": null, "status": null, "code": null})
            );
        }
        Ok(())
    }

    #[test]
    fn answers_parse_whatever_else_they_carry() -> serde_json::Result<()> {
        // As proxy.py's Rule.describe() answers.
        let described = r#"{"id": 3, "match": "sqs:", "action": "hang", "status": null, "code": null,
                            "times_left": null, "matched": 4, "held": 2, "active": true}"#;
        assert_eq!(serde_json::from_str::<RuleState>(described)?.held, 2);
        assert_eq!(serde_json::from_str::<Created>(r#"{"id": 7}"#)?.id, 7);
        assert!(serde_json::from_str::<RuleState>(r#"{"held": -1}"#).is_err());
        Ok(())
    }
}

//! The fault-injection proxies against the real services. Needs PostgreSQL
//! server binaries and the moto venv: run `scripts/install-deps.sh` first.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use testkit::{Action, HttpProxy, Moto, Postgres, Rule, TcpMode, TcpProxy};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Long enough for any answer on loopback; tests that expect silence use
/// [`SILENCE`] instead.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits to conclude that nothing comes back.
const SILENCE: Duration = Duration::from_secs(1);

fn connect(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), ANSWER_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(stream)
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Polls `done` every 10 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    done()
}

// ---------------------------------------------------------------------------
// TcpProxy in front of PostgreSQL
// ---------------------------------------------------------------------------

/// PostgreSQL's SSLRequest packet: the server answers one byte, `N` or `S`.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A protocol 3.0 StartupMessage; with trust authentication the server
/// answers an AuthenticationOk message (`R`).
fn startup_message() -> Vec<u8> {
    let mut body = 196_608_u32.to_be_bytes().to_vec(); // protocol 3.0
    body.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let mut message = u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

/// Sends `packet` and reads the first byte of the answer.
fn first_answer_byte(stream: &mut TcpStream, packet: &[u8]) -> io::Result<u8> {
    stream.write_all(packet)?;
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte)? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(byte[0]),
    }
}

/// Whether the peer closed `stream` (end of stream or reset) before `timeout`.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> io::Result<bool> {
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = [0_u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => continue, // whatever was still in flight
            Err(err) if is_timeout(&err) => return Ok(false),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(true), // reset
        }
    }
}

#[test]
fn tcp_proxy_passes_refuses_blackholes_and_delays_postgres() -> TestResult {
    let pg = Postgres::start()?;
    let proxy = TcpProxy::start(pg.port())?;
    let port = proxy.port();
    assert_ne!(port, pg.port());
    assert_eq!(
        proxy.url_for(&pg.url()),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );

    // pass: the handshake goes through, both ways.
    let mut first = connect(port)?;
    assert!(matches!(first_answer_byte(&mut first, &SSL_REQUEST)?, b'N' | b'S'));
    let mut second = connect(port)?;
    assert!(matches!(first_answer_byte(&mut second, &SSL_REQUEST)?, b'N' | b'S'));
    assert!(wait_until(ANSWER_TIMEOUT, || proxy.connections().is_ok_and(|n| n == 2)));

    // refuse: open connections are cut, new ones closed at once.
    proxy.set_mode(TcpMode::Refuse)?;
    assert!(
        closed_within(&mut first, ANSWER_TIMEOUT)?,
        "refuse left an open connection alive"
    );
    let refused_at = Instant::now();
    // (A reset may already fail the connect itself.)
    if let Ok(mut late) = connect(port) {
        assert!(
            first_answer_byte(&mut late, &SSL_REQUEST).is_err(),
            "refuse answered a new connection"
        );
    }
    let refusing = refused_at.elapsed();
    assert!(refusing < SILENCE, "refusing took {refusing:?}");
    assert!(closed_within(&mut second, ANSWER_TIMEOUT)?);
    assert!(wait_until(ANSWER_TIMEOUT, || proxy.connections().is_ok_and(|n| n == 0)));

    // blackhole: an open connection and a new one both get silence, and stay open.
    proxy.set_mode(TcpMode::Pass)?;
    let mut open = connect(port)?;
    assert!(matches!(first_answer_byte(&mut open, &SSL_REQUEST)?, b'N' | b'S'));
    proxy.set_mode(TcpMode::Blackhole)?;
    open.write_all(&startup_message())?;
    assert!(
        !closed_within(&mut open, SILENCE)?,
        "blackhole closed an open connection"
    );
    let mut new = connect(port)?;
    new.write_all(&SSL_REQUEST)?;
    assert!(
        !closed_within(&mut new, SILENCE)?,
        "blackhole answered or closed a new connection"
    );
    assert_eq!(proxy.connections()?, 2);

    // Back to pass: blackholed connections are closed, new ones work again.
    proxy.set_mode(TcpMode::Pass)?;
    assert!(closed_within(&mut open, ANSWER_TIMEOUT)?);
    assert!(closed_within(&mut new, ANSWER_TIMEOUT)?);
    let mut fresh = connect(port)?;
    assert!(matches!(first_answer_byte(&mut fresh, &SSL_REQUEST)?, b'N' | b'S'));
    assert_eq!(
        first_answer_byte(&mut fresh, &startup_message())?,
        b'R',
        "no AuthenticationOk"
    );

    // delay: the answer comes, late.
    proxy.set_mode(TcpMode::Delay(Duration::from_millis(300)))?;
    let mut slow = connect(port)?;
    let sent_at = Instant::now();
    assert!(matches!(first_answer_byte(&mut slow, &SSL_REQUEST)?, b'N' | b'S'));
    let took = sent_at.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "a 300 ms delay answered after {took:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// HttpProxy in front of moto
// ---------------------------------------------------------------------------

/// A response as the test client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client connection that signs nothing but carries a
/// SigV4-shaped `Authorization` header: moto routes requests by the service
/// in its credential scope (and treats unsigned S3 reads as anonymous).
struct Client {
    reader: BufReader<TcpStream>,
    port: u16,
    service: &'static str,
}

impl Client {
    fn connect(port: u16, service: &'static str) -> io::Result<Client> {
        Ok(Client {
            reader: BufReader::new(connect(port)?),
            port,
            service,
        })
    }

    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }

    fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testkit/20250101/us-east-1/{}/aws4_request, \
             SignedHeaders=host, Signature=0\r\n",
            self.port, self.service
        );
        let chunked = headers
            .iter()
            .any(|(name, value)| name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked"));
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !chunked && method != "GET" && method != "HEAD" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        if chunked {
            // Three uneven chunks, one with an extension, then a trailer.
            let cut = [body.len() / 3, body.len() / 3 * 2];
            let pieces = [&body[..cut[0]], &body[cut[0]..cut[1]], &body[cut[1]..]];
            for (i, piece) in pieces.iter().enumerate() {
                let extension = if i == 1 { ";name=value" } else { "" };
                write!(stream, "{:x}{extension}\r\n", piece.len())?;
                stream.write_all(piece)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"0\r\nx-trailer: yes\r\n\r\n")?;
        } else {
            stream.write_all(body)?;
        }
        stream.flush()
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_owned())
    }

    /// Reads one response (skipping interim 1xx ones) to a `method` request.
    fn receive(&mut self, method: &str) -> io::Result<Response> {
        loop {
            let status_line = self.read_line()?;
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("status line {status_line:?}")))?;
            let mut headers = Vec::new();
            loop {
                let line = self.read_line()?;
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
            if (100..200).contains(&status) {
                continue;
            }
            let mut response = Response {
                status,
                headers,
                body: Vec::new(),
            };
            if method == "HEAD" || status == 204 || status == 304 {
                return Ok(response);
            }
            if response
                .header("transfer-encoding")
                .is_some_and(|value| value.contains("chunked"))
            {
                loop {
                    let size = usize::from_str_radix(self.read_line()?.split(';').next().unwrap_or(""), 16)
                        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
                    if size == 0 {
                        while !self.read_line()?.is_empty() {}
                        return Ok(response);
                    }
                    let start = response.body.len();
                    response.body.resize(start + size, 0);
                    self.reader.read_exact(&mut response.body[start..])?;
                    self.read_line()?;
                }
            }
            let length: usize = response
                .header("content-length")
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "response without framing"))?
                .parse()
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            response.body.resize(length, 0);
            self.reader.read_exact(&mut response.body)?;
            return Ok(response);
        }
    }

    fn request(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Response> {
        self.send(method, target, headers, body)?;
        self.receive(method)
    }

    fn get(&mut self, target: &str) -> io::Result<Response> {
        self.request("GET", target, &[], b"")
    }

    fn put(&mut self, target: &str, body: &[u8]) -> io::Result<Response> {
        self.request("PUT", target, &[("Content-Type", "application/octet-stream")], body)
    }
}

/// GET from moto itself, bypassing the proxy. moto closes every connection
/// after one response (`Connection: close`), hence a new one each time.
fn direct_get(moto: &Moto, target: &str) -> io::Result<Response> {
    Client::connect(moto.port(), "s3")?.get(target)
}

/// A payload that shows truncation or reordering.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// moto and a proxy in front of it, with `bucket` created through the proxy.
fn moto_behind_proxy(bucket: &str) -> Result<(Moto, HttpProxy), Box<dyn std::error::Error>> {
    let moto = Moto::start()?;
    let proxy = HttpProxy::start(&moto.endpoint())?;
    let created = Client::connect(proxy.port(), "s3")?.put(&format!("/{bucket}"), b"")?;
    assert_eq!(created.status, 200, "creating bucket {bucket}: {}", created.text());
    proxy.clear()?;
    Ok((moto, proxy))
}

#[test]
fn http_proxy_relays_s3_and_sqs_and_names_each_operation() -> TestResult {
    let (moto, proxy) = moto_behind_proxy("relay")?;
    assert_eq!(proxy.endpoint(), format!("http://127.0.0.1:{}", proxy.port()));
    assert_eq!(proxy.upstream(), moto.endpoint());
    let body = payload(300_000);

    // One keep-alive connection for everything: framing must stay in sync.
    let mut s3 = Client::connect(proxy.port(), "s3")?;
    assert_eq!(s3.put("/relay/originals/a.bin?x-id=PutObject", &body)?.status, 200);
    let got = s3.get("/relay/originals/a.bin?x-id=GetObject")?;
    assert_eq!((got.status, got.body.len()), (200, body.len()));
    assert!(got.body == body, "the object came back altered");
    let head = s3.request("HEAD", "/relay/originals/a.bin", &[], b"")?;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(body.len().to_string().as_str()));
    let missing = s3.request("HEAD", "/relay/originals/missing.bin", &[], b"")?;
    assert_eq!(missing.status, 404);

    // A chunked upload (extension and trailer included) arrives intact, and
    // so does one that waits for `100 Continue`.
    let chunked = s3.request(
        "PUT",
        "/relay/originals/chunked.bin",
        &[
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "application/octet-stream"),
        ],
        &body[..100_001],
    )?;
    assert_eq!(chunked.status, 200, "{}", chunked.text());
    assert!(s3.get("/relay/originals/chunked.bin")?.body == body[..100_001]);
    let continued = s3.request(
        "PUT",
        "/relay/originals/continue.bin",
        &[("Expect", "100-continue"), ("Content-Type", "application/octet-stream")],
        b"after continue",
    )?;
    assert_eq!(continued.status, 200);
    assert_eq!(s3.get("/relay/originals/continue.bin")?.text(), "after continue");

    // SQS, JSON protocol: queue URLs name the proxy, since Host is kept.
    let mut sqs = Client::connect(proxy.port(), "sqs")?;
    let json = [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("X-Amz-Target", "AmazonSQS.CreateQueue"),
    ];
    let created = sqs.request("POST", "/", &json, br#"{"QueueName": "relay-jobs"}"#)?;
    assert_eq!(created.status, 200, "{}", created.text());
    let queue_url = format!("http://127.0.0.1:{}/123456789012/relay-jobs", proxy.port());
    assert!(created.text().contains(&queue_url), "{}", created.text());
    // Query protocol.
    let listed = sqs.request(
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"Action=ListQueues&Version=2012-11-05",
    )?;
    assert_eq!(listed.status, 200);
    assert!(listed.text().contains("relay-jobs"), "{}", listed.text());

    assert_eq!(
        proxy.requests()?,
        [
            "s3:PUT /relay/originals/a.bin?x-id=PutObject pass",
            "s3:GET /relay/originals/a.bin?x-id=GetObject pass",
            "s3:HEAD /relay/originals/a.bin pass",
            "s3:HEAD /relay/originals/missing.bin pass",
            "s3:PUT /relay/originals/chunked.bin pass",
            "s3:GET /relay/originals/chunked.bin pass",
            "s3:PUT /relay/originals/continue.bin pass",
            "s3:GET /relay/originals/continue.bin pass",
            "sqs:CreateQueue pass",
            "sqs:ListQueues pass",
        ]
    );
    assert_eq!(proxy.count("s3:GET /relay/originals/")?, 3);
    assert_eq!(proxy.count("sqs:")?, 2);
    Ok(())
}

#[test]
fn http_proxy_fail_rules_answer_errors_in_each_service_format() -> TestResult {
    let (moto, proxy) = moto_behind_proxy("fail")?;
    let mut s3 = Client::connect(proxy.port(), "s3")?;
    assert_eq!(s3.put("/fail/a.bin", b"content")?.status, 200);

    // `times(1)`: the next GET fails, the one after passes.
    let once = proxy.add_rule(Rule::new("s3:GET /fail/").action(Action::Fail).times(1))?;
    let failed = s3.get("/fail/a.bin?x-id=GetObject")?;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.header("content-type"), Some("application/xml"));
    assert!(
        failed.text().contains("<Code>ServiceUnavailable</Code>"),
        "{}",
        failed.text()
    );
    assert_eq!(s3.get("/fail/a.bin?x-id=GetObject")?.text(), "content");
    assert_eq!(proxy.held(once)?, 0);

    // A chosen status and code; nothing reaches moto.
    let denied = proxy.add_rule(Rule::new("s3:PUT /fail/processed/").action(Action::fail_with(403, "AccessDenied")))?;
    let refused = s3.put("/fail/processed/b.bin", b"never stored")?;
    assert_eq!(refused.status, 403);
    assert!(
        refused.text().contains("<Code>AccessDenied</Code>"),
        "{}",
        refused.text()
    );
    // A HEAD error has no body; the connection stays usable.
    let head = proxy.add_rule(Rule::new("s3:HEAD").times(1))?;
    assert_eq!(s3.request("HEAD", "/fail/a.bin", &[], b"")?.status, 503);
    assert_eq!(direct_get(&moto, "/fail/processed/b.bin")?.status, 404);
    proxy.remove_rule(denied)?;
    assert_eq!(s3.put("/fail/processed/b.bin", b"stored")?.status, 200);
    assert_eq!(direct_get(&moto, "/fail/processed/b.bin")?.text(), "stored");

    // SQS JSON protocol: the error type and the query-compatible code header
    // the SDK reads.
    let mut sqs = Client::connect(proxy.port(), "sqs")?;
    proxy.add_rule(Rule::new("sqs:ReceiveMessage"))?;
    let receive = sqs.request(
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-amz-json-1.0"),
            ("X-Amz-Target", "AmazonSQS.ReceiveMessage"),
        ],
        br#"{"QueueUrl": "http://127.0.0.1/123456789012/none"}"#,
    )?;
    assert_eq!(receive.status, 503);
    assert_eq!(
        receive.header("x-amzn-query-error"),
        Some("ServiceUnavailable;Receiver")
    );
    assert!(
        receive
            .text()
            .contains(r#""__type": "com.amazonaws.sqs#ServiceUnavailable""#),
        "{}",
        receive.text()
    );

    assert_eq!(proxy.count("s3:GET /fail/a.bin?x-id=GetObject fail")?, 1);
    assert_eq!(proxy.count("s3:GET /fail/a.bin?x-id=GetObject pass")?, 1);
    assert_eq!(proxy.count("s3:PUT /fail/processed/b.bin fail")?, 1);
    assert_eq!(proxy.count("s3:HEAD /fail/a.bin fail")?, 1);
    assert_eq!(proxy.count("sqs:ReceiveMessage fail")?, 1);
    assert_eq!(proxy.held(head)?, 0);
    // An unknown rule has no held count; the error names the call and quotes the proxy.
    let unknown = match proxy.held(forgotten_rule(&proxy)?) {
        Ok(held) => return Err(format!("an unknown rule holds {held}").into()),
        Err(err) => err.to_string(),
    };
    let expected = unknown.starts_with("proxy control GET /rules/") && unknown.contains(": 404 Not Found no rule ");
    assert!(expected, "{unknown}");
    Ok(())
}

/// A rule id the proxy no longer knows.
fn forgotten_rule(proxy: &HttpProxy) -> io::Result<testkit::RuleId> {
    let id = proxy.add_rule(Rule::new("never:"))?;
    proxy.remove_rule(id)?;
    Ok(id)
}

#[test]
fn hold_request_keeps_the_request_from_moto_until_released() -> TestResult {
    let (_moto, proxy) = moto_behind_proxy("holdreq")?;
    let rule = proxy.add_rule(Rule::new("s3:PUT /holdreq/processed/").action(Action::HoldRequest))?;
    let port = proxy.port();
    let upload = thread::spawn(move || -> io::Result<u16> {
        let mut client = Client::connect(port, "s3")?;
        Ok(client.put("/holdreq/processed/a.bin", b"late")?.status)
    });
    proxy.wait_held(rule, 1, ANSWER_TIMEOUT)?;

    // Another connection through the same proxy: not there yet.
    let mut reader = Client::connect(port, "s3")?;
    assert_eq!(reader.get("/holdreq/processed/a.bin")?.status, 404);
    assert!(!upload.is_finished(), "the held PUT was answered");

    proxy.release(rule)?;
    let status = upload.join().map_err(|_| "upload thread panicked")??;
    assert_eq!(status, 200);
    assert_eq!(reader.get("/holdreq/processed/a.bin")?.text(), "late");
    assert_eq!(proxy.held(rule)?, 0);
    // Released rules stop matching.
    assert_eq!(reader.put("/holdreq/processed/b.bin", b"now")?.status, 200);
    assert_eq!(proxy.count("s3:PUT /holdreq/processed/b.bin pass")?, 1);
    Ok(())
}

#[test]
fn hold_response_lets_moto_act_but_keeps_the_answer() -> TestResult {
    let (moto, proxy) = moto_behind_proxy("holdresp")?;
    let rule = proxy.add_rule(Rule::new("s3:PUT /holdresp/").action(Action::HoldResponse))?;
    let port = proxy.port();
    let upload = thread::spawn(move || -> io::Result<(u16, u16)> {
        let mut client = Client::connect(port, "s3")?;
        let status = client.put("/holdresp/a.bin", b"stored early")?.status;
        // The connection is still usable after a held response.
        Ok((status, client.get("/holdresp/a.bin")?.status))
    });
    proxy.wait_held(rule, 1, ANSWER_TIMEOUT)?;

    // moto has the object, the client has no answer yet.
    assert_eq!(direct_get(&moto, "/holdresp/a.bin")?.text(), "stored early");
    thread::sleep(Duration::from_millis(200));
    assert!(!upload.is_finished(), "the held response was delivered");

    proxy.release(rule)?;
    let statuses = upload.join().map_err(|_| "upload thread panicked")??;
    assert_eq!(statuses, (200, 200));
    assert_eq!(
        proxy.requests()?,
        ["s3:PUT /holdresp/a.bin hold_response", "s3:GET /holdresp/a.bin pass"]
    );
    Ok(())
}

#[test]
fn hang_never_answers_and_release_closes_the_connection() -> TestResult {
    let (_moto, proxy) = moto_behind_proxy("hang")?;
    let rule = proxy.add_rule(Rule::new("s3:GET /hang/").action(Action::Hang))?;
    let mut client = Client::connect(proxy.port(), "s3")?;
    client.set_read_timeout(SILENCE)?;
    client.send("GET", "/hang/a.bin", &[], b"")?;
    let err = client.receive("GET").err().ok_or("a hanging request got an answer")?;
    assert!(is_timeout(&err), "expected a read timeout, got {err}");
    assert_eq!(proxy.held(rule)?, 1);

    proxy.release(rule)?;
    client.set_read_timeout(ANSWER_TIMEOUT)?;
    let mut rest = Vec::new();
    let closed = client.reader.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0)) || closed.as_ref().is_err_and(|err| !is_timeout(err)),
        "release did not close the hung connection: {closed:?}"
    );
    assert!(wait_until(ANSWER_TIMEOUT, || proxy.held(rule).is_ok_and(|n| n == 0)));

    // The released rule no longer matches; clear() empties the log.
    assert_eq!(Client::connect(proxy.port(), "s3")?.get("/hang/a.bin")?.status, 404);
    assert_eq!(
        proxy.requests()?,
        ["s3:GET /hang/a.bin hang", "s3:GET /hang/a.bin pass"]
    );
    proxy.clear()?;
    assert!(proxy.requests()?.is_empty());
    assert!(proxy.held(rule).is_err(), "clear() kept the rule");
    Ok(())
}

//! What an operator runs in production: the metrics and health endpoints
//! of `vidworker run`, scraped and parsed as Prometheus would.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use worker::db::Status;

use crate::binary::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Parses OpenMetrics text with the reference parser (prometheus_client
/// from PyPI), which refuses anything malformed. Returns each sample as
/// `name{label="value",…}` (labels sorted) → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut child = Command::new(venv_python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the metrics do not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("a number")))
        .collect()
}

/// What `/metrics` says after one processed and one failed video, parsed
/// by the reference OpenMetrics parser.
fn assert_metrics_after_one_processed_and_one_failed(port: u16) {
    // The rows are settled before each job has deleted its message and
    // left: wait for the last one to leave.
    let started = std::time::Instant::now();
    let (text, m) = loop {
        let (status, text) = http_get(port, "/metrics");
        assert_eq!(status, 200, "{text}");
        let m = parse_metrics(&text);
        if m.get("vidworker_jobs_in_flight{}") == Some(&0.0) || started.elapsed() > Duration::from_secs(10) {
            break (text, m);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no {k} in:\n{text}"));
    assert_eq!(get(r#"vidworker_jobs_total{kind="none",outcome="processed"}"#), 1.0);
    assert_eq!(get(r#"vidworker_jobs_total{kind="no_video",outcome="failed"}"#), 1.0);
    assert_eq!(get(r#"vidworker_stage_duration_seconds_count{stage="transcode"}"#), 2.0);
    assert_eq!(get(r#"vidworker_stage_duration_seconds_count{stage="download"}"#), 2.0);
    assert_eq!(get(r#"vidworker_stage_duration_seconds_count{stage="upload"}"#), 1.0);
    assert_eq!(get(r#"vidworker_stage_duration_seconds_count{stage="record"}"#), 1.0);
    assert_eq!(get("vidworker_transcode_speed_count{}"), 1.0);
    assert!(get(r#"vidworker_transferred_bytes_total{direction="in"}"#) > 0.0);
    assert!(get(r#"vidworker_transferred_bytes_total{direction="out"}"#) > 0.0);
    assert_eq!(get("vidworker_jobs_in_flight{}"), 0.0);
    assert_eq!(get("vidworker_job_slots_free{}"), 1.0);
    assert_eq!(get("vidworker_receive_errors_total{}"), 0.0);
    let build = m
        .keys()
        .find(|k| k.starts_with("vidworker_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("commit=\""), "{build}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_metrics_health_and_readiness() {
    let mut stack = Stack::start(Duration::from_secs(30)).await;
    let good = stack.submit("gray-720p.mp4").await;
    let audio = stack.submit("audio-only.m4a").await;
    let port = testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let mut worker = stack.spawn_binary("metrics", &[("METRICS_ADDR", addr.as_str())]);
    stack.wait_settled(&[good, audio], LIMIT).await;

    assert_metrics_after_one_processed_and_one_failed(port);
    assert_eq!(http_get(port, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(http_get(port, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(http_get(port, "/nope").0, 404);

    // PostgreSQL down: not ready (the answer is cached for 5 s), but alive.
    tokio::task::block_in_place(|| stack.pg.stop().expect("stop PostgreSQL"));
    let (status, body) = stack
        .wait_for(Duration::from_secs(30), "readyz to notice", || async {
            let (status, body) = http_get(port, "/readyz");
            (status == 503).then_some((status, body))
        })
        .await;
    assert!(body.contains("database"), "{status} {body}");
    assert_eq!(http_get(port, "/healthz").0, 200);
    tokio::task::block_in_place(|| stack.pg.start_again().expect("start PostgreSQL"));
    stack
        .wait_for(Duration::from_secs(30), "readyz to recover", || async {
            (http_get(port, "/readyz").0 == 200).then_some(())
        })
        .await;

    // Draining: not ready while a running job finishes, still alive.
    let slow = stack.submit("long-40s.mp4").await;
    stack
        .wait_for(LIMIT, "the slow job to start", || async {
            (stack.row(slow).await.status == Status::Processing).then_some(())
        })
        .await;
    worker.signal(Signal::TERM);
    // The signal is handled asynchronously: give the worker a moment to
    // notice it, well inside the slow job's 40 s.
    let body = stack
        .wait_for(Duration::from_secs(10), "readyz to report draining", || async {
            let (status, body) = http_get(port, "/readyz");
            (status == 503).then_some(body)
        })
        .await;
    assert!(body.contains("draining"), "{body}");
    assert_eq!(http_get(port, "/healthz").0, 200);
    let (_, text) = http_get(port, "/metrics");
    assert_eq!(parse_metrics(&text)["vidworker_jobs_in_flight{}"], 1.0);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    assert_eq!(stack.row(slow).await.status, Status::Processed);
    // The start-up line names the build.
    let log = worker.log_text();
    assert!(log.contains("\"commit\":") && log.contains("\"version\":"), "{log}");
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated
/// CA, made with openssl in `dir`.
fn certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, subject) in [("ca", "/CN=vidworker test CA"), ("other", "/CN=someone else's CA")] {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec![
            "req", "-x509", "-days", "2", "-subj", subject, "-keyout", &key, "-out", &pem,
        ];
        args.extend(ec);
        openssl(&args);
    }
    let mut args = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    args.extend(ec);
    openssl(&args);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_verifies_the_server_and_plaintext_is_refused() {
    let mut stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("gray-720p.mp4").await;
    for sql in [
        "CREATE ROLE app LOGIN PASSWORD 'app-secret'",
        "GRANT ALL ON ALL TABLES IN SCHEMA public TO app",
    ] {
        stack.sql(sql);
    }
    let certs = tempfile::tempdir().expect("dir");
    certificates(certs.path());
    let read = |name: &str| std::fs::read(certs.path().join(name)).expect("read");
    let (crt, key) = (read("server.crt"), read("server.key"));
    // TLS on, and only over TLS: the superuser (the test's own helpers)
    // without a password, the worker's role with one.
    tokio::task::block_in_place(|| {
        stack.pg.reconfigure(
            &[
                ("ssl", "on"),
                ("ssl_cert_file", "server.crt"),
                ("ssl_key_file", "server.key"),
            ],
            "hostssl all postgres 127.0.0.1/32 trust\nhostssl all app 127.0.0.1/32 scram-sha-256\n",
            &[("server.crt", &crt), ("server.key", &key)],
        )
    })
    .expect("TLS on");
    let port = stack.pg.port();
    let url = |ca: &str, mode: &str| {
        format!(
            "postgres://app@127.0.0.1:{port}/vidworker?sslmode={mode}&sslrootcert={}&application_name=vidworker-tls",
            certs.path().join(ca).display()
        )
    };

    // verify-full with the right CA, the password from PGPASSWORD.
    let good = url("ca.pem", "verify-full");
    let mut worker = stack.spawn_binary("tls", &[("DATABASE_URL", good.as_str()), ("PGPASSWORD", "app-secret")]);
    let rows = stack.wait_settled(&[id], LIMIT).await;
    assert_eq!(rows[0].status, Status::Processed, "{}", worker.log_text());
    // What PostgreSQL itself says of the worker's connections.
    let encrypted = tokio::task::block_in_place(|| {
        stack.sql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'app'")
    });
    let encrypted: Vec<&str> = encrypted.lines().collect();
    assert!(
        !encrypted.is_empty() && encrypted.iter().all(|e| *e == "t"),
        "{encrypted:?}"
    );
    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0));

    // Someone else's CA: refused, in one line.
    let wrong = url("other.pem", "verify-full");
    let (code, _, err) = stack.command(
        &["status"],
        &[("DATABASE_URL", wrong.as_str()), ("PGPASSWORD", "app-secret")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("app-secret"), "{err}");

    // No TLS at all: the server refuses it.
    let plain = url("ca.pem", "disable");
    let (code, _, err) = stack.command(
        &["status"],
        &[("DATABASE_URL", plain.as_str()), ("PGPASSWORD", "app-secret")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no encryption"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_answer_at_once_while_postgres_is_down_and_idle_clients_are_cut_off() {
    use std::io::{Read, Write};
    let mut stack = Stack::start(Duration::from_secs(30)).await;
    let port = testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let mut worker = stack.spawn_binary("endpoints", &[("METRICS_ADDR", addr.as_str())]);
    stack
        .wait_for(LIMIT, "the endpoints up", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        })
        .await;
    assert_eq!(http_get(port, "/readyz").0, 200);

    // PostgreSQL stopped: /readyz says so within a probe's usual 2 s.
    tokio::task::block_in_place(|| stack.pg.stop().expect("stop PostgreSQL"));
    tokio::time::sleep(Duration::from_secs(6)).await; // past the cached answer
    let asked = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    write!(s, "GET /readyz HTTP/1.0\r\n\r\n").expect("request");
    let mut answer = String::new();
    let read = s.read_to_string(&mut answer);
    assert!(read.is_ok(), "no answer within 2 s ({:?})", asked.elapsed());
    assert!(
        answer.starts_with("HTTP/1.1 503") || answer.starts_with("HTTP/1.0 503"),
        "{answer}"
    );
    tokio::task::block_in_place(|| stack.pg.start_again().expect("start PostgreSQL"));

    // A client that connects and never finishes its request is cut off.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .expect("half a request");
    idle.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "an idle half-request was held {:?}",
        started.elapsed()
    );
    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
}

#[test]
fn the_endpoints_listen_on_loopback_unless_told_otherwise() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidworker"))
        .args(["run", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: 127.0.0.1:9464]"), "{help}");
}

#[test]
fn version_names_the_ffmpeg_libraries_loaded_at_run_time() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidworker"))
        .arg("--version")
        .output()
        .expect("version");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{version}");
    let first = version.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("vidworker 0.") && first.contains("(commit "),
        "{version}"
    );
    // What the dynamic linker loaded, as the system's own FFmpeg libraries
    // say it: Debian 12's libavcodec is 59.x (FFmpeg 5.1).
    let libs = version.lines().nth(1).unwrap_or_default();
    for lib in [
        "libavutil 5",
        "libavcodec 5",
        "libavformat 5",
        "libavfilter ",
        "libswscale ",
    ] {
        assert!(libs.contains(lib), "{lib} in {version}");
    }
}

/// Every notification `socket` gets within `wait`, in order.
fn notifications(socket: &std::os::unix::net::UnixDatagram, wait: Duration) -> Vec<String> {
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while start.elapsed() < wait {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_worker_says_ready_feeds_the_watchdog_and_says_when_it_stops() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    // The socket systemd would give a Type=notify unit, and a watchdog of
    // 0.9 s: fed every 0.3 s.
    let path = stack.work_dir.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    let socket = path.to_string_lossy().into_owned();
    let mut worker = stack.spawn_binary(
        "notify",
        &[("NOTIFY_SOCKET", socket.as_str()), ("WATCHDOG_USEC", "900000")],
    );
    let first = tokio::task::block_in_place(|| notifications(&systemd, Duration::from_secs(10)));
    let ready = first.iter().position(|n| n.starts_with("READY=1")).expect("READY=1");
    let fed = first[ready..].iter().filter(|n| *n == "WATCHDOG=1").count();
    assert!(
        fed >= 10,
        "fed every third of 0.9 s, not {fed} times in 10 s: {first:?}"
    );
    // A job runs meanwhile, and the watchdog is still fed.
    let id = stack.submit("gray-720p.mp4").await;
    stack.wait_status(id, Status::Processed, LIMIT).await;
    worker.signal(Signal::TERM);
    let last = tokio::task::block_in_place(|| notifications(&systemd, Duration::from_secs(3)));
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    assert!(last.iter().any(|n| n.starts_with("STOPPING=1")), "{last:?}");
}

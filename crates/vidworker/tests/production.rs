//! What an operator runs in production: the metrics and health endpoints
//! of `vidworker run`, scraped and parsed as Prometheus would.

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_metrics_health_and_readiness() {
    let mut stack = Stack::start(Duration::from_secs(30)).await;
    let good = stack.submit("gray-720p.mp4").await;
    let audio = stack.submit("audio-only.m4a").await;
    let port = testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let mut worker = stack.spawn_binary("metrics", &[("METRICS_ADDR", addr.as_str())]);
    stack.wait_settled(&[good, audio], LIMIT).await;

    let (status, text) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{text}");
    let m = parse_metrics(&text);
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
            (stack.row(slow).await.status == "processing").then_some(())
        })
        .await;
    worker.signal(libc::SIGTERM);
    let (status, body) = http_get(port, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    assert_eq!(http_get(port, "/healthz").0, 200);
    let (_, text) = http_get(port, "/metrics");
    assert_eq!(parse_metrics(&text)["vidworker_jobs_in_flight{}"], 1.0);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    assert_eq!(stack.row(slow).await.status, "processed");
    // The start-up line names the build.
    let log = worker.log_text();
    assert!(log.contains("\"commit\":") && log.contains("\"version\":"), "{log}");
}

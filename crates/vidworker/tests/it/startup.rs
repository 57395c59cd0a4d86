//! What `vidworker run` refuses at start, each in one line that names the
//! setting and the reason, before it takes a single message: a rendition
//! asset that does not decode, a queue whose redrive policy would
//! dead-letter videos with attempts left, a database URL that does not
//! verify its server. And a configuration error that appears later is the
//! worker's, never the video's.

use std::time::Duration;

use worker::db::Status;
use worker::queue::QueueSettings;

use crate::binary::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Runs the binary with `extra` until it exits: (exit code, log).
fn refused(stack: &Stack, name: &str, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut w = stack.spawn_binary(name, extra);
    let code = w.wait(Duration::from_secs(60));
    (code, w.log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermark_that_does_not_decode_is_refused_at_start() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("gray-720p.mp4").await;
    let png = stack.work_dir.path().join("broken-logo.png");
    // A PNG signature, then garbage: readable, but not an image.
    std::fs::write(&png, b"\x89PNG\r\n\x1a\nthis is not an image").expect("write");
    let png = png.display().to_string();
    let (code, log) = refused(&stack, "broken-asset", &[("RENDITION_WATERMARK", png.as_str())]);
    assert_eq!(code, Some(1), "{log}");
    let line = log.lines().last().unwrap_or_default();
    assert!(
        line.contains("invalid configuration") && line.contains(&png) && line.contains("cannot decode"),
        "one line naming the file and why: {log}"
    );
    let row = stack.row(id).await;
    assert_eq!(
        (row.status, row.attempts),
        (Status::Pending, 0),
        "no job was tried: {row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_policy_that_would_dead_letter_videos_with_attempts_left_is_refused() {
    let stack = Stack::start_with(QueueSettings {
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 2,
        ..QueueSettings::default()
    })
    .await;
    let (code, log) = refused(&stack, "redrive", &[("MAX_ATTEMPTS", "3")]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("maxReceiveCount 2") && log.contains("MAX_ATTEMPTS 3"),
        "names both numbers: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_url_that_does_not_verify_its_server_is_refused_unless_said_insecure() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let url = "postgres://app:secret@db.example.invalid:5432/videos?sslmode=require";
    let (code, log) = refused(&stack, "tls", &[("DATABASE_URL", url)]);
    assert_eq!(code, Some(1), "{log}");
    let line = log.lines().last().unwrap_or_default();
    assert!(
        line.contains("sslmode=require") && line.contains("verify-full") && line.contains("DATABASE_TLS=insecure"),
        "{log}"
    );
    assert!(!log.contains("secret"), "the password leaked: {log}");
    // Said on purpose: it starts (and fails later, on the unreachable host,
    // after a loud warning).
    let (code, log) = refused(
        &stack,
        "tls-insecure",
        &[("DATABASE_URL", url), ("DATABASE_TLS", "insecure")],
    );
    assert_eq!(code, Some(1));
    assert!(log.contains("does not verify"), "a warning: {log}");
    assert!(log.contains("db.example.invalid"), "then the connection error: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asset_that_breaks_while_running_hands_jobs_back_and_turns_the_worker_unready() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let png = stack.work_dir.path().join("logo.png");
    std::fs::write(&png, processor::LOGO_PNG).expect("write");
    let port = testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let png_path = png.display().to_string();
    let mut worker = stack.spawn_binary(
        "asset-breaks",
        &[
            ("RENDITION_WATERMARK", png_path.as_str()),
            ("METRICS_ADDR", addr.as_str()),
            ("CONFIGURATION_DELAY", "2"),
        ],
    );
    let first = stack.submit("gray-720p.mp4").await;
    stack.wait_settled(&[first], LIMIT).await;
    // The operator's file goes bad under the running worker.
    std::fs::write(&png, b"\x89PNG\r\n\x1a\ntruncated").expect("break");
    let second = stack.submit("gray-720p.mp4").await;
    let row = stack
        .wait_for(LIMIT, "the job handed back for the configuration", || async {
            let row = stack.row(second).await;
            (row.interruptions > 0).then_some(row)
        })
        .await;
    assert_eq!(row.status, Status::Pending, "never the video's fault: {row:?}");
    // Counted just after the row is settled, hence a wait, not a glance.
    stack
        .wait_for(LIMIT, "unready for the configuration", || async {
            let (status, body) = http_get(port, "/readyz");
            (status == 503 && body.contains("configuration")).then_some(())
        })
        .await;
    let (_, metrics) = http_get(port, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vidworker_configuration_errors_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // Fixed: the video is made, uncounted attempts and all, and the
    // worker is ready again.
    std::fs::write(&png, processor::LOGO_PNG).expect("fix");
    let rows = stack.wait_settled(&[second], LIMIT).await;
    assert_eq!(
        (rows[0].status, rows[0].attempts - rows[0].interruptions),
        (Status::Processed, 1)
    );
    // Likewise the success: ready a moment after the row says processed.
    stack
        .wait_for(LIMIT, "ready again", || async {
            (http_get(port, "/readyz").0 == 200).then_some(())
        })
        .await;
    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    stack.check_invariants(&[first, second]).await;
}

//! Faults injected between the worker and its services: an HTTP proxy in
//! front of moto fails, hangs or holds chosen S3 and SQS calls, a TCP proxy
//! in front of PostgreSQL refuses or blackholes it; workers are killed or
//! paused at the worst moments. After each, the invariants hold
//! (`Stack::check_invariants`).

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use testkit::{Action, HttpProxy, Rule, TcpMode, TcpProxy};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(120);
const PUT_RENDITION: &str = "s3:PUT /vidworker-test/processed/";

fn http_proxy(stack: &Stack) -> HttpProxy {
    HttpProxy::start(&stack.moto.endpoint()).expect("HTTP proxy starts")
}

async fn wait_status(stack: &Stack, id: Uuid, status: &str) {
    stack
        .wait_for(LIMIT, &format!("the video {status}"), || async {
            (stack.row(id).await.status == status).then_some(())
        })
        .await;
}

async fn held(proxy: &HttpProxy, rule: testkit::RuleId) {
    tokio::task::block_in_place(|| proxy.wait_held(rule, 1, LIMIT)).expect("the call is held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_upload_before_the_record_leaves_one_rendition() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let proxy = http_proxy(&stack);
    let id = stack.submit("gray-720p.mp4").await;
    // The upload reaches S3, then the worker dies before it hears so.
    let rule = proxy
        .add_rule(Rule::new(PUT_RENDITION).action(Action::HoldResponse))
        .expect("rule");
    let endpoint = proxy.endpoint();
    let mut first = stack.spawn_binary("crashes", &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    held(&proxy, rule).await;
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(10));
    proxy.release(rule).expect("release");
    assert_eq!(
        stack
            .storage
            .list(&format!("processed/{id}/"))
            .await
            .expect("list")
            .len(),
        1,
        "the dead worker's upload is in S3"
    );

    let second = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    second.stop().await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("processed", 2));
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_record_before_the_delete_is_a_harmless_duplicate() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let proxy = http_proxy(&stack);
    let id = stack.submit("gray-720p.mp4").await;
    // The delete never reaches SQS.
    let rule = proxy
        .add_rule(Rule::new("sqs:DeleteMessage").action(Action::Hang))
        .expect("rule");
    let endpoint = proxy.endpoint();
    let mut first = stack.spawn_binary("recorded", &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    held(&proxy, rule).await;
    assert_eq!(stack.row(id).await.status, "processed", "recorded before the delete");
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(10));
    proxy.remove_rule(rule).expect("remove");

    let second = stack.spawn_worker(stack.settings(1)).await;
    stack
        .wait_for(LIMIT, "the redelivered message dropped", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    let stats = second.stop().await;
    assert_eq!(stats.duplicates.load(Relaxed), 1, "recognised as done");
    assert_eq!(stats.processed.load(Relaxed), 0, "not made twice");
    assert_eq!(stack.row(id).await.attempts, 1);
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_worker_cannot_overwrite_the_recorded_rendition() {
    let stack = Stack::start(Duration::from_secs(3)).await;
    let proxy = http_proxy(&stack);
    let id = stack.submit("gray-720p.mp4").await;
    let rule = proxy
        .add_rule(Rule::new(PUT_RENDITION).action(Action::HoldRequest).times(1))
        .expect("rule");
    let endpoint = proxy.endpoint();
    let mut stale = stack.spawn_binary("stale", &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    // The worker's upload is on its way when the worker is paused (a long
    // GC pause, a frozen VM, a network partition).
    held(&proxy, rule).await;
    stale.signal(libc::SIGSTOP);
    // Its lease runs out and another worker does the job and records it.
    let fresh = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    fresh.stop().await;
    let recorded = rows[0].processed_key.clone().expect("recorded");
    let poster = rows[0].poster_key.clone().expect("recorded poster");
    // Then the stale upload lands and the stale worker wakes up.
    proxy.release(rule).expect("release");
    stale.signal(libc::SIGCONT);
    stack
        .wait_for(LIMIT, "the stale worker to clean up its own upload", || async {
            let keys = stack.storage.list(&format!("processed/{id}/")).await.expect("list");
            (keys == vec![poster.clone(), recorded.clone()]).then_some(())
        })
        .await;
    stale.signal(libc::SIGTERM);
    assert_eq!(stale.wait(LIMIT), Some(0), "{}", stale.log_text());
    let row = stack.row(id).await;
    assert_eq!(
        row.processed_key.as_deref(),
        Some(recorded.as_str()),
        "the record is untouched"
    );
    assert_eq!(
        row.processed_bytes.map(|b| b as u64),
        Some(stack.fetch_rendition(&recorded).await.size_bytes)
    );
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_stays_hidden_while_the_outcome_waits_for_the_database() {
    let stack = Stack::start(Duration::from_secs(3)).await;
    let proxy = http_proxy(&stack);
    let pg = TcpProxy::start(stack.pg.port()).expect("TCP proxy starts");
    let id = stack.submit("gray-720p.mp4").await;
    let rule = proxy
        .add_rule(Rule::new(PUT_RENDITION).action(Action::HoldResponse))
        .expect("rule");
    let a = stack
        .spawn_worker_via(
            stack.settings(1),
            Some(&proxy.endpoint()),
            Some(&pg.url_for(&stack.database_url)),
        )
        .await;
    let b = stack.spawn_worker(stack.settings(1)).await;
    held(&proxy, rule).await;
    // The rendition is uploaded; the database goes away for longer than
    // two visibility timeouts before the outcome can be recorded.
    pg.set_mode(TcpMode::Refuse).expect("refuse");
    proxy.release(rule).expect("release");
    tokio::time::sleep(Duration::from_secs(8)).await;
    pg.set_mode(TcpMode::Pass).expect("pass");
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let (a, b) = (a.stop().await, b.stop().await);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("processed", 1));
    assert_eq!(a.processed.load(Relaxed), 1);
    assert_eq!(
        b.busy.load(Relaxed) + b.duplicates.load(Relaxed) + b.processed.load(Relaxed),
        0,
        "the other worker never got the message"
    );
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_blackhole_neither_hangs_the_worker_nor_exposes_its_message() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let pg = TcpProxy::start(stack.pg.port()).expect("TCP proxy starts");
    let id = stack.submit("long-40s.mp4").await;
    let url = pg.url_for(&stack.database_url);
    let mut a = stack.spawn_binary("blackholed", &[("DATABASE_URL", url.as_str()), ("SHUTDOWN_GRACE", "1")]);
    wait_status(&stack, id, "processing").await;
    let b = stack.spawn_worker(stack.settings(1)).await;
    pg.set_mode(TcpMode::Blackhole).expect("blackhole");
    // Lease renewals hang, but the message's visibility is still extended.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let row = stack.row(id).await;
    assert_eq!(row.status, "processing");
    // Shutdown finishes within its bounds even though PostgreSQL hangs.
    let started = std::time::Instant::now();
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait(Duration::from_secs(45)), Some(0), "{}", a.log_text());
    assert!(started.elapsed() < Duration::from_secs(40), "{:?}", started.elapsed());
    pg.set_mode(TcpMode::Pass).expect("pass");
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let stats = b.stop().await;
    assert_eq!(rows[0].status, "processed");
    assert_eq!(stats.processed.load(Relaxed), 1);
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_visibility_extensions_never_make_a_video_twice() {
    let stack = Stack::start(Duration::from_secs(3)).await;
    let proxy = http_proxy(&stack);
    let id = stack.submit("long-40s.mp4").await;
    proxy
        .add_rule(Rule::new("sqs:ChangeMessageVisibility").action(Action::Fail))
        .expect("rule");
    let a = stack
        .spawn_worker_via(stack.settings(1), Some(&proxy.endpoint()), None)
        .await;
    wait_status(&stack, id, "processing").await;
    // The message reappears; another worker finds the video busy (the
    // lease is alive) until the first one records it.
    let b = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    stack
        .wait_for(LIMIT, "the message gone", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    let (a, b) = (a.stop().await, b.stop().await);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("processed", 1));
    assert_eq!(a.processed.load(Relaxed) + b.processed.load(Relaxed), 1);
    assert!(proxy.count("sqs:ChangeMessageVisibility").expect("count") >= 1);
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_patience_loses_nothing() {
    let mut stack = Stack::start(Duration::from_secs(4)).await;
    let mut ids = Vec::new();
    for name in [
        "gray-720p.mp4",
        "portrait-rotated.mp4",
        "tiny-64x64.mp4",
        "long-40s.mp4",
    ] {
        ids.push(stack.submit(name).await);
    }
    let mut settings = stack.settings(2);
    settings.outage_patience = Duration::from_secs(2);
    let worker = stack.spawn_worker(settings).await;
    wait_status(&stack, ids[3], "processing").await;
    tokio::task::block_in_place(|| {
        stack.pg.stop().expect("stop PostgreSQL");
        std::thread::sleep(Duration::from_secs(8));
        stack.pg.start_again().expect("start PostgreSQL again");
    });
    let rows = stack.wait_settled(&ids, LIMIT).await;
    stack
        .wait_for(LIMIT, "the queue empty", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    worker.stop().await;
    for row in &rows {
        assert_eq!(row.status, "processed", "{row:?}");
    }
    stack.check_invariants(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_a_configuration_error_not_an_outage() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let proxy = http_proxy(&stack);
    let id = stack.submit("gray-720p.mp4").await;
    let rule = proxy
        .add_rule(Rule::new("s3:HEAD /vidworker-test/originals/").action(Action::fail_with(403, "AccessDenied")))
        .expect("rule");
    let mut settings = stack.settings(1);
    settings.configuration_delay = Duration::from_secs(3);
    let worker = stack.spawn_worker_via(settings, Some(&proxy.endpoint()), None).await;
    // Handed back at once (not waited on as an outage), the attempt not
    // counted against the video.
    let row = stack
        .wait_for(Duration::from_secs(20), "the job handed back", || async {
            let row = stack.row(id).await;
            (row.status == "pending" && row.interruptions == 1).then_some(row)
        })
        .await;
    assert!(
        row.error.clone().unwrap_or_default().contains("AccessDenied"),
        "{row:?}"
    );
    // An operator fixes the permissions; the video is made.
    proxy.remove_rule(rule).expect("remove");
    let rows = stack.wait_settled(&[id], LIMIT).await;
    worker.stop().await;
    assert_eq!(rows[0].status, "processed");
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_multipart_upload_is_aborted() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let proxy = http_proxy(&stack);
    let clients = worker::aws::Clients::with_credentials("us-east-1", &proxy.endpoint(), "test", "test").await;
    let storage = worker::storage::Storage::new(clients.s3.clone(), BUCKET);
    let big = stack.work_dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 20 << 20]).expect("a 20 MiB file");
    proxy
        .add_rule(Rule::new("s3:PUT /vidworker-test/big").action(Action::Hang))
        .expect("rule");
    // The job is cancelled while a part hangs: the upload future is dropped.
    let upload = storage.upload(&big, "big", "application/octet-stream");
    assert!(tokio::time::timeout(Duration::from_secs(3), upload).await.is_err());
    stack
        .wait_for(Duration::from_secs(30), "the multipart upload aborted", || async {
            let uploads = stack
                .clients
                .s3
                .list_multipart_uploads()
                .bucket(BUCKET)
                .send()
                .await
                .expect("list");
            uploads.uploads().is_empty().then_some(())
        })
        .await;
    proxy.clear().expect("clear");
}

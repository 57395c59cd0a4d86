//! Faults injected between the worker and its services, in process: an
//! HTTP proxy in front of moto fails, hangs or holds chosen S3 and SQS
//! calls, a TCP proxy in front of PostgreSQL refuses or blackholes it.
//! After each, the invariants hold (`Stack::check_invariants`). (Workers
//! killed at the worst moments: the `vidworker` crate's tests.)

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use testkit::{Action, Rule, TcpMode, TcpProxy};
use worker::db::Status;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

const PUT_RENDITION: &str = "s3:PUT /vidworker-test/processed/";

async fn held(proxy: &testkit::HttpProxy, rule: testkit::RuleId) {
    tokio::task::block_in_place(|| proxy.wait_held(rule, 1, LIMIT)).expect("the call is held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_stays_hidden_while_the_outcome_waits_for_the_database() {
    let stack = Stack::start(Duration::from_secs(3)).await;
    let proxy = stack.http_proxy();
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
    let b_stats = b.stats();
    held(&proxy, rule).await;
    // The rendition is uploaded; the database goes away for longer than
    // two visibility timeouts before the outcome can be recorded.
    pg.set_mode(TcpMode::Refuse).expect("refuse");
    proxy.release(rule).expect("release");
    tokio::time::sleep(Duration::from_secs(8)).await;
    // All that time, A kept the message hidden: B never saw it.
    assert_eq!(
        b_stats.busy.load(Relaxed) + b_stats.duplicates.load(Relaxed) + b_stats.processed.load(Relaxed),
        0,
        "the other worker got the message while the outcome waited for the database"
    );
    pg.set_mode(TcpMode::Pass).expect("pass");
    // A's lease ran out meanwhile (2.7 s): an expired lease is not revived,
    // so A gives the claim up and the video is made again, once.
    let rows = stack.wait_settled(&[id], LIMIT).await;
    a.stop().await;
    b.stop().await;
    assert_eq!(rows[0].status, Status::Processed, "{:?}", rows[0]);
    assert!(rows[0].attempts <= 2, "{:?}", rows[0]);
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_visibility_extensions_never_make_a_video_twice() {
    let stack = Stack::start(Duration::from_secs(3)).await;
    let proxy = stack.http_proxy();
    let id = stack.submit("long-40s.mp4").await;
    proxy
        .add_rule(Rule::new("sqs:ChangeMessageVisibility").action(Action::Fail))
        .expect("rule");
    let a = stack
        .spawn_worker_via(stack.settings(1), Some(&proxy.endpoint()), None)
        .await;
    stack.wait_status(id, Status::Processing, LIMIT).await;
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
    assert_eq!((rows[0].status, rows[0].attempts), (Status::Processed, 1));
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
    stack.wait_status(ids[3], Status::Processing, LIMIT).await;
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
        assert_eq!(row.status, Status::Processed, "{row:?}");
    }
    stack.check_invariants(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_a_configuration_error_not_an_outage() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let proxy = stack.http_proxy();
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
            (row.status == Status::Pending && row.interruptions == 1).then_some(row)
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
    assert_eq!(rows[0].status, Status::Processed);
    stack.check_invariants(&[id]).await;
}

/// The instance role may list only its own prefixes, so S3 answers a
/// lookup of a missing original with 403, not 404 (and the 403 of a HEAD
/// has no body to tell them apart). The worker asks the listing: the video
/// fails as missing, once, instead of being handed back forever as a
/// permissions problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_original_denied_as_s3_does_without_list_rights_fails_as_missing() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let proxy = stack.http_proxy();
    let missing = uuid::Uuid::new_v4();
    let key = format!("originals/{missing}.mp4");
    stack.db.insert_pending(missing, &key).await.expect("insert");
    stack.send_raw(&format!(r#"{{"video_id":"{missing}"}}"#)).await;
    proxy
        .add_rule(Rule::new("s3:HEAD /vidworker-test/originals/").action(Action::fail_with(403, "AccessDenied")))
        .expect("rule");
    let worker = stack
        .spawn_worker_via(stack.settings(1), Some(&proxy.endpoint()), None)
        .await;
    let rows = stack.wait_settled(&[missing], LIMIT).await;
    worker.stop().await;
    assert_eq!(rows[0].status, Status::Failed, "{:?}", rows[0]);
    assert_eq!(rows[0].attempts, 1, "{:?}", rows[0]);
    assert_eq!(
        rows[0].interruptions, 0,
        "not handed back as a permissions problem: {:?}",
        rows[0]
    );
    assert_eq!(
        rows[0].error.as_deref(),
        Some(format!("s3://vidworker-test/{key} does not exist").as_str())
    );
    assert_eq!(stack.queue_total().await, 0, "the message is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_multipart_upload_is_aborted() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let proxy = stack.http_proxy();
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
            (stack.open_uploads().await == 0).then_some(())
        })
        .await;
    proxy.clear().expect("clear");
}

//! The real `vidworker run`, killed or signalled at the worst moments:
//! kill -9 mid-job, after the upload, after the record; SIGTERM inside and
//! past the grace period; a stale worker; a PostgreSQL blackhole. At-least-
//! once delivery must never lose a video, leave one stuck, or make it
//! twice; after each, the invariants hold (`Stack::check_invariants`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use testkit::{Action, Rule, TcpMode, TcpProxy};
use worker::db::Status;
use worker::queue::QueueSettings;

use crate::binary::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

const PUT_RENDITION: &str = "s3:PUT /vidworker-test/processed/";

async fn held(proxy: &testkit::HttpProxy, rule: testkit::RuleId) {
    tokio::task::block_in_place(|| proxy.wait_held(rule, 1, LIMIT)).expect("the call is held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_upload_before_the_record_leaves_one_rendition() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let proxy = stack.http_proxy();
    let id = stack.submit("gray-720p.mp4").await;
    // The upload reaches S3, then the worker dies before it hears so.
    let rule = proxy
        .add_rule(Rule::new(PUT_RENDITION).action(Action::HoldResponse))
        .expect("rule");
    let endpoint = proxy.endpoint();
    let mut first = stack.spawn_binary("crashes", &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    held(&proxy, rule).await;
    first.signal(Signal::KILL);
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
    assert_eq!((rows[0].status, rows[0].attempts), (Status::Processed, 2));
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_record_before_the_delete_is_a_harmless_duplicate() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let proxy = stack.http_proxy();
    let id = stack.submit("gray-720p.mp4").await;
    // The delete never reaches SQS.
    let rule = proxy
        .add_rule(Rule::new("sqs:DeleteMessage").action(Action::Hang))
        .expect("rule");
    let endpoint = proxy.endpoint();
    let mut first = stack.spawn_binary("recorded", &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    held(&proxy, rule).await;
    assert_eq!(
        stack.row(id).await.status,
        Status::Processed,
        "recorded before the delete"
    );
    first.signal(Signal::KILL);
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
    let proxy = stack.http_proxy();
    let id = stack.submit("gray-720p.mp4").await;
    let rule = proxy
        .add_rule(Rule::new(PUT_RENDITION).action(Action::HoldRequest).times(1))
        .expect("rule");
    let endpoint = proxy.endpoint();
    let mut stale = stack.spawn_binary("stale", &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    // The worker's upload is on its way when the worker is paused (a long
    // GC pause, a frozen VM, a network partition).
    held(&proxy, rule).await;
    stale.signal(Signal::STOP);
    // Its lease runs out and another worker does the job and records it.
    let fresh = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    fresh.stop().await;
    let recorded = rows[0].processed_key.clone().expect("recorded");
    let poster = rows[0].poster_key.clone().expect("recorded poster");
    // Then the stale upload lands and the stale worker wakes up.
    proxy.release(rule).expect("release");
    stale.signal(Signal::CONT);
    stack
        .wait_for(LIMIT, "the stale worker to clean up its own upload", || async {
            let keys = stack.storage.list(&format!("processed/{id}/")).await.expect("list");
            (keys == vec![poster.clone(), recorded.clone()]).then_some(())
        })
        .await;
    stale.signal(Signal::TERM);
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
async fn a_postgres_blackhole_neither_hangs_the_worker_nor_exposes_its_message() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let pg = TcpProxy::start(stack.pg.port()).expect("TCP proxy starts");
    let id = stack.submit("long-40s.mp4").await;
    let url = pg.url_for(&stack.database_url);
    let mut a = stack.spawn_binary("blackholed", &[("DATABASE_URL", url.as_str()), ("SHUTDOWN_GRACE", "1")]);
    stack.wait_status(id, Status::Processing, LIMIT).await;
    let b = stack.spawn_worker(stack.settings(1)).await;
    pg.set_mode(TcpMode::Blackhole).expect("blackhole");
    // Lease renewals hang, but the message's visibility is still extended.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let row = stack.row(id).await;
    assert_eq!(row.status, Status::Processing);
    // Shutdown finishes within its bounds even though PostgreSQL hangs.
    let started = std::time::Instant::now();
    a.signal(Signal::TERM);
    assert_eq!(a.wait(Duration::from_secs(45)), Some(0), "{}", a.log_text());
    assert!(started.elapsed() < Duration::from_secs(40), "{:?}", started.elapsed());
    pg.set_mode(TcpMode::Pass).expect("pass");
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let stats = b.stop().await;
    assert_eq!(rows[0].status, Status::Processed);
    assert_eq!(stats.processed.load(Relaxed), 1);
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_is_replaced_and_the_video_made_once() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let id = stack.submit(SLOW).await;
    let mut first = stack.spawn_binary("first", &[]);
    stack.wait_status(id, Status::Processing, LIMIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.signal(Signal::KILL);
    first.wait(Duration::from_secs(10));
    assert_eq!(stack.row(id).await.status, Status::Processing, "killed mid-job");
    assert!(
        stack.leftover_job_dirs().len() <= 1,
        "a killed job may leave its own directory only"
    );

    let second = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let stats = second.stop().await;
    let row = &rows[0];
    assert_eq!(row.status, Status::Processed, "{row:?}");
    assert_eq!(row.attempts, 2, "one killed attempt, one that finished");
    assert_eq!(stats.processed.load(Relaxed), 1);
    assert_eq!(stats.busy.load(Relaxed), 0, "the dead worker's lease had run out");
    let info = stack.fetch_rendition(row.processed_key.as_deref().expect("key")).await;
    assert_eq!(info.duration, Some(Duration::from_secs(30)));
    assert_eq!(stack.queue_total().await, 0);
    assert!(stack.dead_letters().await.is_empty());
    assert!(
        stack.leftover_job_dirs().is_empty(),
        "the new worker removed the killed one's files: {:?}",
        stack.leftover_job_dirs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_job_finish_then_exits_cleanly() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit(SLOW).await;
    let mut worker = stack.spawn_binary("graceful", &[("SHUTDOWN_GRACE", "90")]);
    stack.wait_status(id, Status::Processing, LIMIT).await;
    // The job's working directory is private to the worker's user.
    let dirs = stack
        .wait_for(LIMIT, "the job's directory", || async {
            let dirs = stack.leftover_job_dirs();
            (!dirs.is_empty()).then_some(dirs)
        })
        .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dirs[0]).expect("job dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    worker.signal(Signal::TERM);
    let code = worker.wait(LIMIT);
    assert_eq!(code, Some(0), "{}", worker.log_text());
    let row = stack.row(id).await;
    assert_eq!(
        row.status,
        Status::Processed,
        "the job finished within the grace period"
    );
    assert_eq!(row.attempts, 1);
    assert_eq!(stack.queue_total().await, 0);
    assert!(stack.leftover_job_dirs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_hands_the_job_back_at_once() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit(SLOW).await;
    let mut worker = stack.spawn_binary("impatient", &[("SHUTDOWN_GRACE", "0")]);
    stack.wait_status(id, Status::Processing, LIMIT).await;
    worker.signal(Signal::TERM);
    let code = worker.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", worker.log_text());
    assert_eq!(worker.events("released"), 1, "{}", worker.log_text());

    let row = stack.row(id).await;
    assert_eq!(row.status, Status::Pending, "handed back: {row:?}");
    assert!(row.claimed_by.is_none() && row.lease_expires_at.is_none());
    let (visible, in_flight, _) = stack.depth_of(&stack.queue_url).await;
    assert_eq!((visible, in_flight), (1, 0), "the message is visible again at once");
    assert!(stack.leftover_job_dirs().is_empty(), "{:?}", stack.leftover_job_dirs());

    let next = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    next.stop().await;
    assert_eq!(rows[0].status, Status::Processed);
    assert_eq!(rows[0].attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_grace_on_the_last_receive_strands_nothing() {
    // The queue's limit as it used to be, equal to MAX_ATTEMPTS (here 2 to
    // be quick; a worker warns about it and starts): a few deploys during
    // one long job use it up, and SQS moves the message to the dead-letter
    // queue while the row is pending.
    let stack = Stack::start_with(QueueSettings {
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 2,
        ..QueueSettings::default()
    })
    .await;
    let id = stack.submit(SLOW).await;
    for deploy in 0..2 {
        let mut w = stack.spawn_binary(
            &format!("deploy-{deploy}"),
            &[
                ("SHUTDOWN_GRACE", "0"),
                ("RECONCILE_INTERVAL", "0"),
                ("MAX_ATTEMPTS", "2"),
            ],
        );
        stack.wait_status(id, Status::Processing, LIMIT).await;
        w.signal(Signal::TERM);
        assert_eq!(w.wait(Duration::from_secs(30)), Some(0), "{}", w.log_text());
    }
    let row = stack.row(id).await;
    assert_eq!((row.status, row.interruptions), (Status::Pending, 2), "{row:?}");

    // The next receive moves the message to the dead-letter queue; the
    // reconciler notices the untouched pending row and sends it again.
    let mut settings = stack.settings(1);
    settings.max_attempts = 2;
    settings.reconcile_interval = Duration::from_secs(1);
    settings.stranded_after = Duration::from_secs(3);
    let worker = stack.spawn_worker(settings).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    assert_eq!(rows[0].status, Status::Processed, "{:?}", rows[0]);
    // The reconciler also removes the dead letter of the processed video.
    stack
        .wait_for(LIMIT, "the dead-letter queue emptied", || async {
            stack.dead_letters().await.is_empty().then_some(())
        })
        .await;
    stack
        .wait_for(LIMIT, "the job queue emptied", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    let stats = worker.stop().await;
    assert!(stats.resent.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(stack.row(id).await.resends >= 1, "the row says it was re-sent");
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_does_not_stop_reconciliation_for_the_fleet() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    // Worker A reconciles every second; its dead-letter receives are held,
    // so it is frozen in the middle of a pass, holding whatever it holds.
    let proxy = stack.http_proxy();
    let endpoint = proxy.endpoint();
    let held = proxy
        .add_rule(Rule::new("sqs:ReceiveMessage").action(Action::HoldRequest))
        .expect("rule");
    let frozen = stack.spawn_binary(
        "frozen",
        &[("AWS_ENDPOINT_URL", endpoint.as_str()), ("RECONCILE_INTERVAL", "1")],
    );
    tokio::task::block_in_place(|| proxy.wait_held(held, 2, Duration::from_secs(60))).expect("A mid-pass");
    frozen.signal(Signal::STOP);
    // A video nobody will ever take up: its row is pending, its message
    // long gone.
    let id = stack.row_without_message("gray-720p.mp4").await;
    stack.sql(&format!(
        "UPDATE videos SET updated_at = now() - interval '1 day' WHERE id = '{id}'"
    ));
    let mut other = stack.spawn_binary("other", &[("RECONCILE_INTERVAL", "1"), ("STRANDED_AFTER", "60")]);
    let rows = stack.wait_settled(&[id], Duration::from_secs(150)).await;
    assert_eq!(rows[0].status, Status::Processed, "{:?}", rows[0]);
    assert_eq!(rows[0].resends, 1, "{:?}", rows[0]);
    other.signal(Signal::TERM);
    assert_eq!(other.wait(LIMIT), Some(0), "{}", other.log_text());
    frozen.signal(Signal::KILL);
    drop(proxy);
}

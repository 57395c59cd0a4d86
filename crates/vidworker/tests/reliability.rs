//! The edges of reliability on the real stack: videos stranded by SQS's own
//! receive count, the reconciler, the dead-letter tools, messages that
//! arrive before their row, the wrong database, and timeouts. Each test
//! ends with the invariants every run must keep (`Stack::check_invariants`).

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

mod common;

use std::time::Duration;

use common::*;
use uuid::Uuid;
use worker::db::FailureKind;
use worker::queue::QueueSettings;

const LIMIT: Duration = Duration::from_secs(120);

/// A job that takes several seconds: 30 s of output from a 40 s upload.
const SLOW: &str = "long-40s.mp4";

async fn wait_status(stack: &Stack, id: Uuid, status: &str) {
    stack
        .wait_for(LIMIT, &format!("the video {status}"), || async {
            (stack.row(id).await.status == status).then_some(())
        })
        .await;
}

/// A row and its original, without a message (as if the message was lost).
async fn row_without_message(stack: &Stack, fixture_name: &str) -> Uuid {
    let id = Uuid::new_v4();
    let key = format!("originals/{id}.mp4");
    stack
        .storage
        .upload(&fixture(fixture_name), &key, "video/mp4")
        .await
        .expect("upload");
    stack.db.insert_pending(id, &key).await.expect("row");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_grace_on_the_last_receive_strands_nothing() {
    // The queue's limit as it used to be (3 receives, here 2 to be quick):
    // a few deploys during one long job use it up, and SQS moves the
    // message to the dead-letter queue while the row is pending.
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
            &[("SHUTDOWN_GRACE", "0"), ("RECONCILE_INTERVAL", "0")],
        );
        wait_status(&stack, id, "processing").await;
        w.signal(libc::SIGTERM);
        assert_eq!(w.wait(Duration::from_secs(30)), Some(0), "{}", w.log_text());
    }
    let row = stack.row(id).await;
    assert_eq!((row.status.as_str(), row.interruptions), ("pending", 2), "{row:?}");

    // The next receive moves the message to the dead-letter queue; the
    // reconciler notices the untouched pending row and sends it again.
    let mut settings = stack.settings(1);
    settings.reconcile_interval = Duration::from_secs(1);
    settings.stranded_after = Duration::from_secs(3);
    let worker = stack.spawn_worker(settings).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    assert_eq!(rows[0].status, "processed", "{:?}", rows[0]);
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
async fn stranded_videos_are_resent_once_per_pass_and_failed_after_the_last_resend() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = row_without_message(&stack, "gray-720p.mp4").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Two reconcilers at once (a fleet member and an operator): the video
    // is re-sent once.
    let (a, b) = (
        stack.reconciler(Duration::from_secs(2), Duration::from_secs(3600)),
        stack.reconciler(Duration::from_secs(2), Duration::from_secs(3600)),
    );
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let resent: u32 = [ra.expect("pass"), rb.expect("pass")]
        .into_iter()
        .flatten()
        .map(|r| r.resent)
        .sum();
    assert_eq!(resent, 1);
    assert_eq!(stack.queue_total().await, 1, "exactly one message sent");
    let row = stack.row(id).await;
    assert_eq!((row.status.as_str(), row.resends), ("pending", 1));
    assert!(row.resend_reason.unwrap_or_default().contains("untouched"));

    // A video re-sent as often as allowed and still not taken up fails,
    // saying why.
    let other = row_without_message(&stack, "gray-720p.mp4").await;
    sqlx::query("UPDATE videos SET resends = 3, updated_at = now() - interval '1 hour' WHERE id = $1")
        .bind(other)
        .execute(stack.db.pool())
        .await
        .expect("update");
    let report = a.run_once().await.expect("pass").expect("lock");
    assert_eq!(report.stranded, 1, "{report:?}");
    let row = stack.row(other).await;
    assert_eq!(row.status, "failed");
    assert_eq!(row.failure_kind.as_deref(), Some(FailureKind::Stranded.as_str()));
    assert!(row.error.unwrap_or_default().contains("even after 3 re-sends"));

    // The re-sent message gets the first video made.
    let worker = stack.spawn_worker(stack.settings(1)).await;
    stack.wait_settled(&[id], LIMIT).await;
    worker.stop().await;
    stack.check_invariants(&[id, other]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_claims_go_back_or_fail_and_live_leases_are_left_alone() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let claim = |id, lease| {
        let db = stack.db.clone();
        async move {
            match db.claim(id, "vanished", lease).await.expect("claim") {
                worker::db::Claim::Claimed(c) => c,
                other => panic!("{other:?}"),
            }
        }
    };
    let short = Duration::from_millis(100);
    // Abandoned on its first attempt: back to pending with a message.
    let first = row_without_message(&stack, "gray-720p.mp4").await;
    claim(first, short).await;
    // Still being worked on: untouched.
    let live = row_without_message(&stack, "gray-720p.mp4").await;
    claim(live, Duration::from_secs(3600)).await;
    // Abandoned on its last attempt after its rendition was uploaded:
    // never failed, run again.
    let uploaded = row_without_message(&stack, "gray-720p.mp4").await;
    let c = claim(uploaded, short).await;
    stack
        .db
        .record_upload(uploaded, c.token, &format!("processed/{uploaded}/x.mp4"))
        .await
        .expect("record upload");
    // Abandoned on its last attempt: failed, gave up.
    let last = row_without_message(&stack, "gray-720p.mp4").await;
    claim(last, short).await;
    for id in [uploaded, last] {
        sqlx::query("UPDATE videos SET attempts = 3 WHERE id = $1")
            .bind(id)
            .execute(stack.db.pool())
            .await
            .expect("attempts");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let report = stack
        .reconciler(Duration::from_secs(3600), Duration::ZERO)
        .run_once()
        .await
        .expect("pass")
        .expect("lock");
    assert_eq!((report.returned, report.abandoned), (2, 1), "{report:?}");
    assert_eq!(
        stack.row(live).await.status,
        "processing",
        "a live lease is never touched"
    );
    assert_eq!(stack.row(first).await.status, "pending");
    assert_eq!(
        stack.row(uploaded).await.status,
        "pending",
        "an uploaded rendition is never failed"
    );
    let row = stack.row(last).await;
    assert_eq!(row.failure_kind.as_deref(), Some("gave_up"), "{row:?}");
    assert!(row.error.unwrap_or_default().starts_with("gave up after 3 attempts"));

    let worker = stack.spawn_worker(stack.settings(1)).await;
    stack.wait_settled(&[first, uploaded], LIMIT).await;
    worker.stop().await;
    stack.check_invariants(&[first, uploaded, last]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_tools_and_requeue_are_driven_by_the_row() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let processed = stack.submit("gray-720p.mp4").await;
    let bad = stack.submit("truncated.mp4").await;
    let worker = stack.spawn_worker(stack.settings(1)).await;
    stack.wait_settled(&[processed, bad], LIMIT).await;
    worker.stop().await;
    let gave_up = row_without_message(&stack, "portrait-rotated.mp4").await;
    stack
        .db
        .mark_failed(
            gave_up,
            None,
            FailureKind::GaveUp,
            "gave up after 3 attempts: test",
            "test",
        )
        .await
        .expect("fail");
    let dlq = worker::queue::Queue::new(stack.clients.sqs.clone(), &stack.dlq_url);
    for body in [
        worker::job::body(processed),
        worker::job::body(bad),
        worker::job::body(gave_up),
        "not a job".to_owned(),
    ] {
        dlq.send(&body).await.expect("dead letter");
    }

    let (code, out, err) = stack.command(&["dlq", "stats"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(": 4 messages"), "{out}");
    let (code, out, err) = stack.command(&["dlq", "peek", "10"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("video {processed}  row processed")), "{out}");
    assert!(out.contains(&format!("video {gave_up}  row failed")), "{out}");
    assert_eq!(stack.dead_letters().await.len(), 4, "peeking leaves them queued");
    let (code, out, err) = stack.command(&["dlq", "redrive", "--all"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("redriven 1, deleted 1 (already processed), left 2"),
        "{out}"
    );
    let mut left: Vec<String> = stack.dead_letters().await.into_iter().map(|d| d.0).collect();
    left.sort();
    let mut want = vec![worker::job::body(bad), "not a job".to_owned()];
    want.sort();
    assert_eq!(left, want, "failed inputs and malformed messages stay for an operator");

    // Requeue a processed video on purpose: made again, under a new key,
    // and the old rendition removed once the new one is recorded.
    let old_key = stack.row(processed).await.processed_key.expect("key");
    let (code, out, err) = stack.command(&["requeue", &processed.to_string()], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("requeued"), "{out}");
    let (code, _, err) = stack.command(&["requeue", &Uuid::new_v4().to_string()], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not requeued"), "{err}");

    let worker = stack.spawn_worker(stack.settings(1)).await;
    stack
        .wait_for(LIMIT, "both videos processed", || async {
            let a = stack.row(processed).await;
            let b = stack.row(gave_up).await;
            (a.status == "processed" && a.processed_key.as_deref() != Some(&old_key) && b.status == "processed")
                .then_some(())
        })
        .await;
    worker.stop().await;
    assert!(
        !stack
            .storage
            .list(&format!("processed/{processed}/"))
            .await
            .expect("list")
            .contains(&old_key)
    );
    assert_eq!(
        stack.row(processed).await.attempts,
        1,
        "a requeued video gets a fresh set of attempts"
    );
    stack.check_invariants(&[processed, gave_up, bad]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_before_its_row_waits_for_the_row() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = Uuid::new_v4();
    stack.send_raw(&worker::job::body(id)).await;
    let mut settings = stack.settings(1);
    settings.unknown_video_patience = Duration::from_secs(60);
    settings.allow_empty_database = true;
    let worker = stack.spawn_worker(settings).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The platform's insert becomes visible late.
    let key = format!("originals/{id}.mp4");
    stack
        .storage
        .upload(&fixture("gray-720p.mp4"), &key, "video/mp4")
        .await
        .expect("upload");
    stack.db.insert_pending(id, &key).await.expect("row");
    let rows = stack.wait_settled(&[id], LIMIT).await;
    worker.stop().await;
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("processed", 1));
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_an_empty_database_while_messages_wait() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("gray-720p.mp4").await;
    // A wrong DATABASE_URL: another (empty) database, migrated at start.
    let wrong = stack.pg.create_database("wrong").expect("database");
    let mut w = stack.spawn_binary(
        "wrong-db",
        &[("DATABASE_URL", wrong.as_str()), ("RUN_MIGRATIONS", "true")],
    );
    assert_eq!(w.wait(Duration::from_secs(60)), Some(1));
    let log = w.log_text();
    assert!(log.contains("has no videos while the queue holds 1 messages"), "{log}");
    let (visible, in_flight, _) = stack.depth_of(&stack.queue_url).await;
    assert_eq!((visible, in_flight), (1, 0), "the message is untouched");
    assert_eq!(stack.row(id).await.status, "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_once_then_blamed_on_the_input() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit(SLOW).await;
    let mut settings = stack.settings(1);
    settings.spec.limits.timeout = Some(Duration::from_secs(1));
    let worker = stack.spawn_worker(settings).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    worker.stop().await;
    let row = &rows[0];
    assert_eq!((row.status.as_str(), row.attempts), ("failed", 2), "{row:?}");
    assert_eq!(row.failure_kind.as_deref(), Some("input"));
    assert!(
        row.error.clone().unwrap_or_default().contains("timed out after 1.0 s"),
        "{row:?}"
    );
    stack.check_invariants(&[id]).await;
}

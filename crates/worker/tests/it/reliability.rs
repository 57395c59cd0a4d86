//! The reconciler and the edges of a video's life, in process: stranded
//! and abandoned videos, a message sent before its row, a timeout retried
//! once.

use std::time::Duration;

use uuid::Uuid;
use worker::db::{FailureKind, Status};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranded_videos_are_resent_once_per_pass_and_failed_after_the_last_resend() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    // A pending video whose message went missing an hour ago (the queue
    // is empty: nothing can still reach it).
    let id = stack.row_without_message("gray-720p.mp4").await;
    stack.sql(&format!(
        "UPDATE videos SET updated_at = now() - interval '1 hour' WHERE id = '{id}'"
    ));
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
    assert_eq!((row.status, row.resends), (Status::Pending, 1));
    assert!(row.resend_reason.unwrap_or_default().contains("no message"));

    // A video re-sent as often as allowed and still not taken up fails,
    // saying why.
    let other = stack.row_without_message("gray-720p.mp4").await;
    stack.sql(&format!(
        "UPDATE videos SET resends = 3, updated_at = now() - interval '1 hour' WHERE id = '{other}'"
    ));
    let report = a.run_once().await.expect("pass").expect("lock");
    assert_eq!(report.stranded, 1, "{report:?}");
    let row = stack.row(other).await;
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.failure_kind, Some(FailureKind::Stranded));
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
            match db.claim(id, "vanished", Uuid::new_v4(), 0, lease).await.expect("claim") {
                worker::db::Claim::Claimed(c) => c,
                other => panic!("{other:?}"),
            }
        }
    };
    let short = Duration::from_millis(100);
    // Abandoned on its first attempt: back to pending with a message.
    let first = stack.row_without_message("gray-720p.mp4").await;
    claim(first, short).await;
    // Still being worked on: untouched.
    let live = stack.row_without_message("gray-720p.mp4").await;
    claim(live, Duration::from_secs(3600)).await;
    // Abandoned on its last attempt after its rendition was uploaded:
    // never failed, run again.
    let uploaded = stack.row_without_message("gray-720p.mp4").await;
    let c = claim(uploaded, short).await;
    stack
        .db
        .record_upload(uploaded, c.token, &format!("processed/{uploaded}/x.mp4"))
        .await
        .expect("record upload");
    // Abandoned on its last attempt: failed, gave up.
    let last = stack.row_without_message("gray-720p.mp4").await;
    claim(last, short).await;
    for id in [uploaded, last] {
        stack.sql(&format!("UPDATE videos SET attempts = 3 WHERE id = '{id}'"));
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
        Status::Processing,
        "a live lease is never touched"
    );
    assert_eq!(stack.row(first).await.status, Status::Pending);
    assert_eq!(
        stack.row(uploaded).await.status,
        Status::Pending,
        "an uploaded rendition is never failed"
    );
    let row = stack.row(last).await;
    assert_eq!(row.failure_kind, Some(FailureKind::GaveUp), "{row:?}");
    assert!(row.error.unwrap_or_default().starts_with("gave up after 3 attempts"));

    let worker = stack.spawn_worker(stack.settings(1)).await;
    stack.wait_settled(&[first, uploaded], LIMIT).await;
    worker.stop().await;
    stack.check_invariants(&[first, uploaded, last]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_before_its_row_waits_for_the_row() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = Uuid::new_v4();
    stack.send_raw(&worker::message::body(id)).await;
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
    assert_eq!((rows[0].status, rows[0].attempts), (Status::Processed, 1));
    stack.check_invariants(&[id]).await;
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
    assert_eq!((row.status, row.attempts), (Status::Failed, 2), "{row:?}");
    assert_eq!(row.failure_kind, Some(FailureKind::Input));
    assert!(
        row.error.clone().unwrap_or_default().contains("timed out after 1.0 s"),
        "{row:?}"
    );
    stack.check_invariants(&[id]).await;
}

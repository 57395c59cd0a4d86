//! Every outcome recorded once and never undone: the edges where a lost
//! reply, a stray message, a broken events topic, a backlog or a race
//! used to lose or repeat work. Each test names the defect it guards.

use std::time::Duration;

use testkit::{Action, Rule};
use uuid::Uuid;
use worker::completion::Publisher;
use worker::db::{FailureKind, Status};
use worker::queue::QueueSettings;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// PostgreSQL commits the outcome 4 s after it is asked, while the worker
/// gives up on each call after 2 s: the commit lands, the reply is lost, and
/// the worker's retry meets a row that already says what it asked for.
async fn worker_whose_first_write_of(stack: &Stack, from: Status, to: Status) -> RunningWorker {
    stack.slow_first_write(from, to, 4.0);
    let db = stack.db_with_call_timeout(Duration::from_secs(2));
    stack.run(stack.runner(stack.settings(1), None, Some(db)).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_reply_is_lost_keeps_the_rendition_it_recorded() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("gray-720p.mp4").await;
    let worker = worker_whose_first_write_of(&stack, Status::Processing, Status::Processed).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    // Let a wrong clean-up happen, if one would.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.stop().await;
    let row = &rows[0];
    assert_eq!((row.status, row.attempts), (Status::Processed, 1), "{row:?}");
    let key = row.processed_key.as_deref().expect("recorded key");
    assert!(
        stack.storage.size(key).await.is_ok(),
        "the object the row records, {key}, was deleted after the lost reply"
    );
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_whose_reply_is_lost_deletes_its_message_at_once() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("audio-only.m4a").await;
    let worker = worker_whose_first_write_of(&stack, Status::Processing, Status::Failed).await;
    stack.wait_settled(&[id], LIMIT).await;
    // Well inside the 30 s visibility timeout: the message was settled,
    // not left to come back.
    stack
        .wait_for(Duration::from_secs(15), "the message deleted", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    worker.stop().await;
    let row = stack.row(id).await;
    assert_eq!((row.status, row.attempts), (Status::Failed, 1), "{row:?}");
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_is_lost_is_the_same_claim_when_retried() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("gray-720p.mp4").await;
    let worker = worker_whose_first_write_of(&stack, Status::Pending, Status::Processing).await;
    // Without recognising its own claim, the worker would find the video
    // busy under its own lost claim and wait out the 27 s lease.
    let rows = stack.wait_settled(&[id], Duration::from_secs(20)).await;
    worker.stop().await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (Status::Processed, 1),
        "{:?}",
        rows[0]
    );
    stack.check_invariants(&[id]).await;
}

/// Marks a video failed after giving up, as the worker does on its last
/// attempt, and leaves a copy of its message in the queue.
async fn given_up_with_a_stray_message(stack: &Stack) -> Uuid {
    let id = stack.row_without_message("gray-720p.mp4").await;
    stack.sql(&format!(
        "UPDATE videos SET status = 'failed', failure_kind = 'gave_up', attempts = 3, phase = 'failed', \
         error = 'gave up after 3 attempts: test', last_error_kind = 'test', event_id = gen_random_uuid() \
         WHERE id = '{id}'"
    ));
    stack.send_raw(&format!(r#"{{"video_id":"{id}"}}"#)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_that_was_given_up_stays_failed_until_an_operator_requeues_it() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = given_up_with_a_stray_message(&stack).await;
    // A plain duplicate too.
    stack.send_raw(&format!(r#"{{"video_id":"{id}"}}"#)).await;
    let worker = stack.spawn_worker(stack.settings(1)).await;
    stack
        .wait_for(LIMIT, "the stray messages settled", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    let row = stack.row(id).await;
    assert_eq!(
        (row.status, row.failure_kind, row.attempts),
        (Status::Failed, Some(FailureKind::GaveUp), 3),
        "a stray message restarted a given-up video: {row:?}"
    );
    // The operator's requeue reopens it, with a fresh set of attempts.
    let reconciler = stack.reconciler(Duration::from_secs(3600), Duration::from_secs(3600));
    assert!(reconciler.requeue(id, "test").await.expect("requeue"));
    let rows = stack.wait_settled(&[id], LIMIT).await;
    worker.stop().await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (Status::Processed, 1),
        "{:?}",
        rows[0]
    );
    stack.check_invariants(&[id]).await;
}

/// A publisher to `topic` whose SNS calls go through an HTTP proxy that
/// fails every Publish until the returned rule is removed.
async fn broken_topic(stack: &Stack, topic: &str) -> (testkit::HttpProxy, testkit::RuleId, Publisher) {
    let proxy = stack.http_proxy();
    let rule = proxy
        .add_rule(Rule::new("sns:Publish").action(Action::Fail))
        .expect("rule");
    let clients = worker::aws::Clients::with_credentials("us-east-1", &proxy.endpoint(), "test", "test").await;
    (proxy, rule, Publisher::new(&clients, Some(topic), None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_announced_while_the_topic_is_down_goes_out_once_it_is_back() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let (topic, subscriber) = stack.subscribed_topic().await;
    let (proxy, rule, publisher) = broken_topic(&stack, &topic).await;
    let id = stack.submit("gray-720p.mp4").await;
    let worker = stack
        .run(
            stack
                .runner(stack.settings(1), None, None)
                .await
                .with_publisher(publisher.clone()),
        )
        .await;
    stack.wait_settled(&[id], LIMIT).await;
    stack
        .wait_for(Duration::from_secs(15), "the message deleted", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    worker.stop().await;
    assert!(stack.events(&subscriber, Duration::from_secs(2)).await.is_empty());

    // The topic is back: a reconciliation pass publishes what was not.
    proxy.remove_rule(rule).expect("remove rule");
    let reconciler = stack
        .reconciler(Duration::from_secs(3600), Duration::from_secs(3600))
        .with_publisher(publisher);
    reconciler.run_once().await.expect("pass").expect("lease");
    let events = stack.events(&subscriber, Duration::from_secs(3)).await;
    let row = stack.row(id).await;
    let [event] = of_video(&events, id)[..] else {
        panic!("one event for {id}: {events:#?}")
    };
    assert_eq!(event["id"], row.event_id.expect("event id").to_string());
    assert_eq!(event["type"], "video.processed");
    // And only once: a second pass finds nothing left to publish.
    reconciler.run_once().await.expect("pass").expect("lease");
    assert!(stack.events(&subscriber, Duration::from_secs(2)).await.is_empty());
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_the_reconciler_fails_is_announced_even_if_the_topic_was_down() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let (topic, subscriber) = stack.subscribed_topic().await;
    let (proxy, rule, publisher) = broken_topic(&stack, &topic).await;
    // Stranded after its last re-send, long ago, with no message anywhere.
    let id = stack.row_without_message("gray-720p.mp4").await;
    stack.sql(&format!(
        "UPDATE videos SET resends = 3, updated_at = now() - interval '1 day' WHERE id = '{id}'"
    ));
    let reconciler = stack
        .reconciler(Duration::from_secs(1), Duration::from_secs(3600))
        .with_publisher(publisher);
    let report = reconciler.run_once().await.expect("pass").expect("lease");
    assert_eq!(report.stranded, 1, "{report:?}");
    assert!(stack.events(&subscriber, Duration::from_secs(2)).await.is_empty());
    proxy.remove_rule(rule).expect("remove rule");
    reconciler.run_once().await.expect("pass").expect("lease");
    let events = stack.events(&subscriber, Duration::from_secs(3)).await;
    let [event] = of_video(&events, id)[..] else {
        panic!("one event for {id}: {events:#?}")
    };
    assert_eq!(event["type"], "video.failed");
    assert_eq!(event["failure"]["class"], "stranded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_older_than_stranded_after_is_processed_not_failed() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let mut ids = vec![stack.submit(SLOW).await, stack.submit(SLOW).await];
    for _ in 0..5 {
        ids.push(stack.submit("gray-720p.mp4").await);
    }
    let mut settings = stack.settings(1);
    settings.prefetch = 0;
    settings.reconcile_interval = Duration::from_secs(1);
    settings.stranded_after = Duration::from_secs(3);
    let worker = stack.spawn_worker(settings).await;
    let rows = stack.wait_settled(&ids, Duration::from_secs(240)).await;
    worker.stop().await;
    for row in &rows {
        assert_eq!(
            (row.status, row.attempts, row.resends),
            (Status::Processed, 1, 0),
            "a video waiting in the queue was treated as stranded: {row:?}"
        );
    }
    stack.check_invariants(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_comes_before_its_row_spends_one_receive() {
    let stack = Stack::start_with(QueueSettings {
        visibility_timeout: Duration::from_secs(6),
        max_receive_count: 3,
        ..QueueSettings::default()
    })
    .await;
    let id = Uuid::new_v4();
    let key = format!("originals/{id}.mp4");
    stack
        .storage
        .upload(&fixture("gray-720p.mp4"), &key, "video/mp4")
        .await
        .expect("upload");
    stack.send_raw(&worker::message::body(id)).await;
    let mut settings = stack.settings(1);
    settings.unknown_video_patience = Duration::from_secs(60);
    // The table is empty while the message waits: that is the point.
    settings.allow_empty_database = true;
    let worker = stack.spawn_worker(settings).await;
    // The platform's insert becomes visible 20 s after its message: time
    // for a worker that bounces the message (1 s backoff, doubling) to
    // spend the queue's three receives.
    tokio::time::sleep(Duration::from_secs(20)).await;
    stack.db.insert_pending(id, &key).await.expect("row");
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let stats = worker.stop().await;
    assert_eq!(rows[0].status, Status::Processed, "{:?}", rows[0]);
    assert!(
        stack.dead_letters().await.is_empty(),
        "SQS dead-lettered a message whose video was waiting for its row"
    );
    // Waited for inside its one receive: never bounced as unknown.
    assert_eq!(
        stats.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the message was bounced back to the queue while its row was missing"
    );
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_busy_on_another_worker_is_waited_for_not_bounced_into_the_dead_letter_queue() {
    let stack = Stack::start_with(QueueSettings {
        visibility_timeout: Duration::from_secs(6),
        max_receive_count: 3,
        ..QueueSettings::default()
    })
    .await;
    let id = stack.submit("gray-720p.mp4").await;
    // Worker A cannot extend its message's visibility, and its upload is
    // held for 30 s: its message reappears while it still holds the video.
    let proxy = stack.http_proxy();
    proxy
        .add_rule(Rule::new("sqs:ChangeMessageVisibility").action(Action::Fail))
        .expect("rule");
    let held = proxy
        .add_rule(
            Rule::new("s3:PUT /vidworker-test/processed/")
                .action(Action::HoldRequest)
                .times(1),
        )
        .expect("rule");
    let a = stack
        .spawn_worker_via(stack.settings(1), Some(&proxy.endpoint()), None)
        .await;
    stack.wait_status(id, Status::Processing, LIMIT).await;
    let b = stack.spawn_worker(stack.settings(1)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    proxy.release(held).expect("release");
    let rows = stack.wait_settled(&[id], LIMIT).await;
    b.stop().await;
    a.stop().await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (Status::Processed, 1),
        "{:?}",
        rows[0]
    );
    assert!(
        stack.dead_letters().await.is_empty(),
        "the busy video's message was bounced into the dead-letter queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_not_renewed() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.row_without_message("gray-720p.mp4").await;
    let worker::db::Claim::Claimed(claim) = stack
        .db
        .claim(id, "test", Uuid::new_v4(), 0, Duration::from_secs(1))
        .await
        .expect("claim")
    else {
        panic!("claimed")
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !stack
            .db
            .renew_lease(id, claim.token, Duration::from_secs(60))
            .await
            .expect("renew"),
        "an expired lease came back to life"
    );
}

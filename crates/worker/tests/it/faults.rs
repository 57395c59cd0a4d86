//! Faults the worker rides out in process: jobs longer than the visibility
//! timeout, duplicates, endless transient failures, a database restart, an
//! S3 and SQS outage. At-least-once delivery must never lose a video, leave
//! one stuck, or make it twice. (Killed and signalled workers: the
//! `vidworker` crate's tests, which run the real binary.)

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use worker::db::Status;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_visibility_timeout_is_made_once() {
    // The job takes several times the 2 s visibility timeout; a second
    // worker polls the whole time and must never get the message.
    let stack = Stack::start(Duration::from_secs(2)).await;
    let id = stack.submit(SLOW).await;
    let a = stack.spawn_worker(stack.settings(1)).await;
    let b = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let (a, b) = (a.stop().await, b.stop().await);
    let row = &rows[0];
    assert_eq!(row.status, Status::Processed);
    assert_eq!(row.attempts, 1, "claimed once");
    let taken = row.processed_at.expect("end") - row.processing_started_at.expect("start");
    assert!(
        taken > time::Duration::seconds(2),
        "the job outlived the timeout ({taken})"
    );
    assert_eq!(a.processed.load(Relaxed) + b.processed.load(Relaxed), 1);
    assert_eq!(
        a.busy.load(Relaxed) + b.busy.load(Relaxed) + a.duplicates.load(Relaxed) + b.duplicates.load(Relaxed),
        0,
        "the message was never delivered a second time"
    );
    assert_eq!(stack.queue_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_message_makes_one_rendition() {
    let stack = Stack::start(Duration::from_secs(3)).await;
    let id = stack.submit("gray-720p.mp4").await;
    stack.send_raw(&format!(r#"{{"video_id":"{id}"}}"#)).await;
    let worker = stack.spawn_worker(stack.settings(2)).await;
    stack.wait_settled(&[id], LIMIT).await;
    stack
        .wait_for(LIMIT, "both messages gone", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    let stats = worker.stop().await;
    let row = stack.row(id).await;
    assert_eq!(row.status, Status::Processed);
    assert_eq!(row.attempts, 1, "processed once");
    assert_eq!(stats.processed.load(Relaxed), 1);
    assert_eq!(
        stats.duplicates.load(Relaxed),
        1,
        "the duplicate was recognised and deleted"
    );
    assert!(stack.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_transiently_ends_failed_in_the_dead_letter_queue() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let worker = stack.spawn_worker(stack.settings(1)).await;
    // Every attempt fails the same transient way: the worker's directory
    // turns into a file, so no job directory can be made in it.
    for entry in std::fs::read_dir(stack.work_dir.path()).expect("work dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("vidworker-") && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).expect("remove");
            std::fs::write(entry.path(), b"not a directory").expect("block");
        }
    }
    let id = stack.submit("gray-720p.mp4").await;
    let body = format!(r#"{{"video_id":"{id}"}}"#);
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let dead = stack
        .wait_for(LIMIT, "the message in the dead-letter queue", || async {
            let dead = stack.dead_letters().await;
            (!dead.is_empty()).then_some(dead)
        })
        .await;
    let stats = worker.stop().await;
    let row = &rows[0];
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.attempts, 3, "exactly the configured number of receives");
    let error = row.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("gave up after 3 attempts: cannot create a working directory"),
        "{error}"
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, body, "the message itself, untouched");
    assert_eq!(stats.retried.load(Relaxed), 2);
    assert_eq!(stack.queue_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_loses_nothing() {
    let mut stack = Stack::start(Duration::from_secs(10)).await;
    let mut ids = Vec::new();
    for name in [
        "gray-720p.mp4",
        "portrait-rotated.mp4",
        "tiny-64x64.mp4",
        "short-0.4s.mp4",
        "prores.mov",
    ] {
        ids.push(stack.submit(name).await);
    }
    let worker = stack.spawn_worker(stack.settings(1)).await;
    let first = ids[0];
    stack
        .wait_for(LIMIT, "one video processed", || async {
            (stack.row(first).await.status == Status::Processed).then_some(())
        })
        .await;
    tokio::task::block_in_place(|| {
        stack.pg.stop().expect("stop PostgreSQL");
        std::thread::sleep(Duration::from_secs(3));
        stack.pg.start_again().expect("start PostgreSQL again");
    });
    let rows = stack.wait_settled(&ids, LIMIT).await;
    let stats = worker.stop().await;
    for row in &rows {
        assert_eq!(row.status, Status::Processed, "{row:?}");
    }
    assert_eq!(stats.processed.load(Relaxed), ids.len() as u64, "each made once");
    assert_eq!(stack.queue_total().await, 0);
    assert!(stack.dead_letters().await.is_empty(), "the outage used up no receives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_and_s3_outage_is_waited_out_without_a_busy_loop() {
    let mut stack = Stack::start(Duration::from_secs(10)).await;
    let worker = stack.spawn_worker(stack.settings(1)).await;
    tokio::task::block_in_place(|| stack.moto.stop().expect("stop moto"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!worker.handle.is_finished(), "the worker keeps running");
    tokio::task::block_in_place(|| stack.moto.start_again().expect("start moto again"));
    // moto comes back empty: set up the queues again, as after a real reset.
    let settings = worker::queue::QueueSettings {
        visibility_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    queue_init(&stack.storage, &stack.clients, &settings).await;
    let id = stack.submit("gray-720p.mp4").await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let stats = worker.stop().await;
    assert_eq!(rows[0].status, Status::Processed, "recovered");
    let errors = stats.receive_errors.load(Relaxed);
    assert!(
        (1..=6).contains(&errors),
        "{errors} failed receives in 6 s: backing off, not spinning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_a_short_default_timeout_does_not_expose_a_running_job() {
    // Someone shortened the queue's own visibility timeout to 1 s; the
    // worker hides what it receives for its own VISIBILITY_TIMEOUT anyway.
    let stack = Stack::start(Duration::from_secs(30)).await;
    stack
        .clients
        .sqs
        .set_queue_attributes()
        .queue_url(&stack.queue_url)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .expect("set attributes");
    let id = stack.submit(SLOW).await;
    let a = stack.spawn_worker(stack.settings(1)).await;
    let b = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let (a, b) = (a.stop().await, b.stop().await);
    assert_eq!(rows[0].status, Status::Processed);
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(
        a.busy.load(Relaxed) + b.busy.load(Relaxed) + a.duplicates.load(Relaxed) + b.duplicates.load(Relaxed),
        0,
        "the message was never delivered a second time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_queue_a_failing_job_stops_at_the_limit() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    // A bare queue: no redrive policy, so SQS would deliver forever.
    let bare = stack
        .clients
        .sqs
        .create_queue()
        .queue_name("bare-jobs")
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("url")
        .to_owned();
    let id = uuid::Uuid::new_v4();
    stack
        .db
        .insert_pending(id, &format!("originals/{id}.mp4"))
        .await
        .expect("row");
    let original = fixture("gray-720p.mp4");
    stack
        .storage
        .upload(&original, &format!("originals/{id}.mp4"), "video/mp4")
        .await
        .expect("upload");
    let queue = worker::queue::Queue::new(stack.clients.sqs.clone(), &bare);
    queue.send(&format!(r#"{{"video_id":"{id}"}}"#)).await.expect("send");

    let mut settings = stack.settings(1);
    settings.max_attempts = 2;
    settings.temp_dir = stack.work_dir.path().join("missing");
    let worker = worker::runner::Runner::new(settings, stack.db.clone(), stack.storage.clone(), queue);
    // The missing directory is the point: start() would refuse it, so run
    // the loop directly.
    let shutdown = worker::shutdown::Shutdown::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    stack
        .wait_for(LIMIT, "the message gone", || async {
            (stack.depth_of(&bare).await == (0, 0, 0)).then_some(())
        })
        .await;
    shutdown.stop_intake();
    let stats = handle.await.expect("worker");
    let row = stack.row(id).await;
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.attempts, 2, "exactly MAX_RECEIVES attempts");
    assert!(row.error.unwrap_or_default().starts_with("gave up after 2 attempts"));
    assert_eq!(stats.dead_lettered.load(Relaxed), 1, "logged and deleted, not looped");
}

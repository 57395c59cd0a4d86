//! The worker against the real stack, in process: PostgreSQL and moto's S3
//! and SQS. An upload becomes a processed rendition; bad originals fail
//! once with the reason; unknown and malformed messages end in the
//! dead-letter queue; jobs run side by side and prefetch.

use std::time::Duration;

use uuid::Uuid;
use worker::config::WorkerSettings;
use worker::db::{Phase, Status};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_becomes_a_processed_rendition_in_s3() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("landscape-1080p30.mp4").await;
    assert_eq!(stack.row(id).await.status, Status::Pending);

    let worker = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let stats = worker.stop().await;

    let row = &rows[0];
    assert_eq!(row.status, Status::Processed, "error: {:?}", row.error);
    assert_eq!(row.error, None);
    assert_eq!(row.attempts, 1);
    // Each claim writes its own key, so a stale worker can never overwrite
    // the recorded rendition; it is the only one under the video's prefix.
    let key = row.processed_key.clone().expect("recorded key");
    assert!(
        key.starts_with(&format!("processed/{id}/")) && key.ends_with(".mp4"),
        "{key}"
    );
    // Its poster sits beside it, recorded in the same write.
    let poster = row.poster_key.clone().expect("recorded poster");
    assert_eq!(poster, key.replace(".mp4", ".jpg"));
    assert_eq!(
        stack.storage.list(&format!("processed/{id}/")).await.expect("list"),
        vec![poster.clone(), key.clone()]
    );
    assert_eq!((row.phase, row.progress_percent), (Phase::Done, 100));
    assert!(row.processed_at.is_some() && row.processing_started_at.is_some());
    assert_eq!((row.source_width, row.source_height), (Some(1920), Some(1080)));
    assert_eq!(row.source_duration_seconds, Some(4.0));
    let size = std::fs::metadata(fixture("landscape-1080p30.mp4"))
        .expect("fixture")
        .len();
    assert_eq!(row.original_bytes, Some(size as i64));
    assert_eq!(row.processed_duration_seconds, Some(4.0));
    assert!(
        row.lease_expires_at.is_none() && row.claimed_by.is_none(),
        "claim released"
    );

    // The object a viewer fetches.
    assert_eq!(
        stack.storage.content_type(&key).await.expect("head").as_deref(),
        Some("video/mp4")
    );
    let info = stack.fetch_rendition(&key).await;
    assert_eq!((info.display_width, info.display_height), (1280, 720));
    assert_eq!(info.video_codec, "h264");
    assert!(!info.has_audio);
    assert_eq!(info.duration, Some(Duration::from_secs(4)));
    assert_eq!(row.processed_bytes, Some(info.size_bytes as i64));
    assert_eq!(
        stack.storage.content_type(&poster).await.expect("head").as_deref(),
        Some("image/jpeg")
    );
    assert_eq!(stack.fetch_jpeg_size(&poster).await, (1280, 720));

    // The message is gone, nothing went to the dead-letter queue, and the
    // job's working directory was removed.
    assert_eq!(stack.queue_total().await, 0);
    assert!(stack.dead_letters().await.is_empty());
    assert!(stack.leftover_job_dirs().is_empty(), "{:?}", stack.leftover_job_dirs());
    assert_eq!(stats.processed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// What viewers download: the recorded rendition and its poster, fetched
/// from S3 by a browser (presigned GETs on moto, with byte ranges), play,
/// seek to 37 % and 71 % and to the last second, and play to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_rendition_plays_and_seeks_in_a_browser_straight_from_s3() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    // A clip whose open GOPs broke the seek (before closed GOPs were set).
    let id = stack.submit("portrait-phone-8s.mp4").await;
    // The production rendition (x264 medium), not the tests' fast preset:
    // what viewers get is what is played.
    let settings = WorkerSettings {
        spec: processor::RenditionSpec::default(),
        ..stack.settings(1)
    };
    let worker = stack.spawn_worker(settings).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    worker.stop().await;
    let row = &rows[0];
    assert_eq!(row.status, Status::Processed, "error: {:?}", row.error);
    let video = stack.presigned_url(row.processed_key.as_deref().expect("key")).await;
    let poster = stack.presigned_url(row.poster_key.as_deref().expect("poster")).await;
    assert!(video.starts_with(&stack.moto.endpoint()), "{video}");
    // The default watermark's opaque orange point (see the processor's tests).
    let point = (1128 + 38, 568 + 38);
    let playback = tokio::task::spawn_blocking(move || testkit::browser::play(&video, Some(&poster), Some(point)))
        .await
        .expect("the harness thread")
        .expect("the browser harness runs");
    assert_eq!((playback.video_width, playback.video_height), (Some(1280), Some(720)));
    assert!((playback.duration.expect("duration") - 8.0).abs() < 0.1, "{playback:?}");
    playback.assert_played_through();
    let poster = playback.poster.as_ref().expect("poster tried");
    assert_eq!(
        (poster.width, poster.height, poster.error.as_deref()),
        (1280, 720, None)
    );
    let seek = playback.steps.iter().find(|s| s.step == "seek 37 %").expect("seeked");
    let [r, g, b, _] = seek.pixel.expect("moto allows CORS, so the frame reads back");
    // The logo's orange (242, 107, 29) at 85 % opacity over the moving
    // picture: 85 % of each channel, plus up to 15 % of white beneath.
    let blended = |got: u8, c: f64| (0.85 * c - 8.0..=0.85 * c + 38.25 + 8.0).contains(&f64::from(got));
    assert!(
        blended(r, 242.0) && blended(g, 107.0) && blended(b, 29.0),
        "the watermark as the browser shows it: {:?}",
        seek.pixel
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_originals_fail_once_with_the_reason_and_are_not_retried() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let corrupt = stack.submit("truncated.mp4").await;
    let audio = stack.submit("audio-only.m4a").await;
    // A row whose original was never uploaded.
    let missing = Uuid::new_v4();
    let missing_key = format!("originals/{missing}.mp4");
    stack.db.insert_pending(missing, &missing_key).await.expect("insert");
    stack.send_raw(&format!(r#"{{"video_id":"{missing}"}}"#)).await;
    // A row that points outside originals/.
    let foreign = Uuid::new_v4();
    stack
        .db
        .insert_pending(foreign, "processed/someone-else.mp4")
        .await
        .expect("insert");
    stack.send_raw(&format!(r#"{{"video_id":"{foreign}"}}"#)).await;

    let worker = stack.spawn_worker(stack.settings(2)).await;
    let rows = stack.wait_settled(&[corrupt, audio, missing, foreign], LIMIT).await;
    // Let any (wrong) retry come back before looking at the queue.
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.stop().await;

    for row in &rows {
        assert_eq!(row.status, Status::Failed, "{row:?}");
        assert_eq!(row.attempts, 1, "permanent failures are not retried: {row:?}");
    }
    let error = |i: usize| rows[i].error.clone().unwrap_or_default();
    assert!(
        error(0).starts_with(&format!("s3://{BUCKET}/originals/{corrupt}.mp4: corrupt or truncated")),
        "{}",
        error(0)
    );
    assert!(error(1).contains("no video stream"), "{}", error(1));
    assert_eq!(error(2), format!("s3://{BUCKET}/{missing_key} does not exist"));
    assert!(error(3).contains("outside \"originals/\""), "{}", error(3));
    assert_eq!(stack.queue_total().await, 0, "every message deleted");
    assert!(stack.dead_letters().await.is_empty());
    assert!(stack.leftover_job_dirs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_videos_and_malformed_messages_end_in_the_dead_letter_queue_as_evidence() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let stranger = Uuid::new_v4();
    stack.send_raw(&format!(r#"{{"video_id":"{stranger}"}}"#)).await;
    stack.send_raw("this is not json").await;
    stack
        .send_raw(r#"{"video_id":"../../etc/passwd","original_key":"x"}"#)
        .await;

    // Messages but no videos at all would normally refuse the start (the
    // wrong database?); here it is the point.
    let mut settings = stack.settings(1);
    settings.allow_empty_database = true;
    let worker = stack.spawn_worker(settings).await;
    stack
        .wait_for(LIMIT, "the job queue to empty", || async {
            let (visible, in_flight, _) = stack.depth_of(&stack.queue_url).await;
            (visible + in_flight == 0).then_some(())
        })
        .await;
    let stats = worker.stop().await;

    let mut dead = stack.dead_letters().await;
    dead.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(dead[0].0, "this is not json", "the body is kept untouched");
    assert!(dead[0].1["vidworker-reason"].contains("not JSON"), "{:?}", dead[0].1);
    assert_eq!(dead[1].0, r#"{"video_id":"../../etc/passwd","original_key":"x"}"#);
    assert!(dead[1].1["vidworker-reason"].contains("is not a UUID"));
    // A video the database does not know is retried for a while (its row
    // may not be visible yet), then kept as evidence, never deleted.
    assert_eq!(dead[2].0, format!(r#"{{"video_id":"{stranger}"}}"#));
    assert!(
        dead[2].1["vidworker-reason"].contains("no such video"),
        "{:?}",
        dead[2].1
    );
    assert!(stack.db.get(stranger).await.expect("query").is_none());
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.dead_lettered.load(Relaxed), 3);
    assert!(stats.failed.load(Relaxed) >= 1, "the unknown video was seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_jobs_run_at_once_up_to_the_concurrency() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let mut ids = Vec::new();
    for name in [
        "gray-720p.mp4",
        "portrait-rotated.mp4",
        "anamorphic-pal.mkv",
        "letterbox-21x9.webm",
        "prores.mov",
    ] {
        ids.push(stack.submit(name).await);
    }
    // Two transcoding at once, and none taken ahead (see the next test).
    let mut settings = stack.settings(2);
    settings.prefetch = 0;
    let worker = stack.spawn_worker(settings).await;
    let rows = stack.wait_settled(&ids, LIMIT).await;
    worker.stop().await;

    for row in &rows {
        assert_eq!(row.status, Status::Processed, "{row:?}");
        assert_eq!(row.attempts, 1);
        let info = stack.fetch_rendition(row.processed_key.as_deref().expect("key")).await;
        assert_eq!((info.display_width, info.display_height), (1280, 720));
    }
    // Jobs overlapped in time, but never more than two at once.
    let spans: Vec<_> = rows
        .iter()
        .map(|r| (r.processing_started_at.expect("start"), r.processed_at.expect("end")))
        .collect();
    let max_overlap = spans
        .iter()
        .map(|&(start, _)| spans.iter().filter(|&&(s, e)| s <= start && start < e).count())
        .max()
        .unwrap_or(0);
    assert_eq!(max_overlap, 2, "{spans:?}");
    assert_eq!(stack.queue_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_original_is_refused_before_it_is_downloaded() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("landscape-1080p30.mp4").await;
    let mut settings = stack.settings(1);
    settings.spec.limits.max_input_bytes = 100_000;
    let worker = stack.spawn_worker(settings).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    worker.stop().await;
    assert_eq!(rows[0].status, Status::Failed);
    let error = rows[0].error.clone().unwrap_or_default();
    assert!(error.contains("more than the 100000 byte input limit"), "{error}");
    assert_eq!(stack.queue_total().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_job_downloads_while_one_transcodes_and_waits_for_its_slot() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    // Two slow jobs: whichever starts first, the other waits for seconds.
    let ids = [stack.submit("long-40s.mp4").await, stack.submit("long-40s.mp4").await];
    let mut settings = stack.settings(1);
    settings.prefetch = 1;
    settings.progress_interval = Duration::from_secs(1);
    let worker = stack.spawn_worker(settings).await;
    // One transcodes; the other is claimed, downloaded, and waits.
    let waiting = stack
        .wait_for(
            LIMIT,
            "one job transcoding while the other waits downloaded",
            || async {
                let (a, b) = (stack.row(ids[0]).await, stack.row(ids[1]).await);
                let waits = |r: &worker::db::VideoRow| {
                    r.status == Status::Processing && r.phase == Phase::Downloading && r.progress_percent == 10
                };
                match (a.phase, b.phase) {
                    (Phase::Transcoding, _) if waits(&b) => Some(b),
                    (_, Phase::Transcoding) if waits(&a) => Some(a),
                    _ => None,
                }
            },
        )
        .await;
    let rows = stack.wait_settled(&ids, LIMIT).await;
    let stats = worker.stop().await;
    assert!(
        rows.iter().all(|r| r.status == Status::Processed && r.attempts == 1),
        "{rows:?}"
    );
    assert_eq!(stats.processed.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert!(waiting.lease_expires_at.is_some(), "the waiting job holds its claim");
    stack.check_invariants(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_a_job_waiting_for_its_slot_is_handed_back_uncounted() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let ids = [stack.submit("long-40s.mp4").await, stack.submit("long-40s.mp4").await];
    let mut settings = stack.settings(1);
    settings.progress_interval = Duration::from_secs(1);
    let worker = stack.spawn_worker(settings).await;
    let (running, waiting) = stack
        .wait_for(LIMIT, "one job transcoding while the other waits", || async {
            let (a, b) = (stack.row(ids[0]).await, stack.row(ids[1]).await);
            let waits = |r: &worker::db::VideoRow| r.phase == Phase::Downloading && r.progress_percent == 10;
            match (a.phase, b.phase) {
                (Phase::Transcoding, _) if waits(&b) => Some((a.id, b.id)),
                (_, Phase::Transcoding) if waits(&a) => Some((b.id, a.id)),
                _ => None,
            }
        })
        .await;
    // Intake stops: the running job finishes within the grace period, the
    // waiting one goes back at once, its attempt not counted.
    let stats = worker.stop().await;
    let (running, waiting) = (stack.row(running).await, stack.row(waiting).await);
    assert_eq!(running.status, Status::Processed, "{running:?}");
    assert_eq!(waiting.status, Status::Pending, "{waiting:?}");
    assert_eq!((waiting.attempts, waiting.interruptions), (1, 1), "{waiting:?}");
    assert_eq!((waiting.phase, waiting.progress_percent), (Phase::Queued, 0));
    assert_eq!(stats.processed.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(stack.queue_total().await, 1, "its message is back in the queue");
    assert!(stack.leftover_job_dirs().is_empty(), "{:?}", stack.leftover_job_dirs());
}

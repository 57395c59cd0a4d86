//! What the platform sees while a video runs: live progress in the row.
//! (Completion events: the `vidworker` crate's tests.)

use std::time::{Duration, Instant};

use worker::db::{Phase, Status};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(180);

/// The phases of an attempt, in order.
const PHASES: &[Phase] = &[
    Phase::Queued,
    Phase::Downloading,
    Phase::Transcoding,
    Phase::Uploading,
    Phase::Recording,
    Phase::Done,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_climbs_through_the_phases_while_a_long_video_runs_and_ends_at_100() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("long-40s.mp4").await;
    let row = stack.row(id).await;
    assert_eq!((row.phase, row.progress_percent), (Phase::Queued, 0));

    let mut settings = stack.settings(1);
    settings.progress_interval = Duration::from_secs(1);
    let worker = stack.spawn_worker(settings).await;
    let mut seen: Vec<(Phase, i16)> = Vec::new();
    let start = Instant::now();
    let row = loop {
        let row = stack.row(id).await;
        assert!(row.attempts <= 1, "one attempt: {row:?}");
        if seen.last() != Some(&(row.phase, row.progress_percent)) {
            seen.push((row.phase, row.progress_percent));
        }
        if row.status != Status::Pending && row.status != Status::Processing {
            break row;
        }
        assert!(start.elapsed() < LIMIT, "still {}: {seen:?}", row.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    worker.stop().await;

    assert_eq!(row.status, Status::Processed, "{:?}", row.error);
    assert_eq!(seen.last(), Some(&(Phase::Done, 100)), "{seen:?}");
    let between: Vec<i16> = seen
        .iter()
        .filter(|(phase, p)| *phase == Phase::Transcoding && *p > 0 && *p < 100)
        .map(|(_, p)| *p)
        .collect();
    assert!(between.len() >= 2, "transcoding progress observed on the way: {seen:?}");
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let order = |p: Phase| PHASES.iter().position(|q| *q == p).expect("a known phase");
        assert!(
            order(b.0) >= order(a.0) && b.1 >= a.1,
            "progress went back from {a:?} to {b:?}: {seen:?}"
        );
    }
    stack.check_invariants(&[id]).await;
}

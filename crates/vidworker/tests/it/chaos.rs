//! A randomised fault soak, Jepsen-style: jobs run across several real
//! `vidworker run` processes on the local stack while a scheduler, seeded
//! so a run can be repeated, applies faults at random: workers killed
//! (`kill -9`) or stopped (SIGTERM) and started again, PostgreSQL refused,
//! blackholed or slowed (a TCP proxy), S3 and SQS answering 503 or holding
//! requests (an HTTP proxy), duplicate messages, extra reconciliation
//! passes. Then the faults stop, the fleet settles, and every video is
//! checked:
//!
//! - **lost**: not final (neither processed nor failed) once settled;
//! - **stale**: a recorded object missing, or anything else left under the
//!   video's prefix;
//! - **unannounced**: a final outcome whose completion event never came;
//! - **doubled**: more than one distinct completion event for its outcome,
//!   or an event whose id is not the row's (redeliveries of the same id are
//!   allowed, and counted);
//! - **stuck**: messages left in the job queue, dead letters of videos that
//!   did not fail, job directories or unfinished multipart uploads.
//!
//! A small run is part of the test suite. A long one:
//!
//! ```sh
//! CHAOS_JOBS=300 CHAOS_FAULTS=100 CHAOS_WORKERS=3 \
//!   cargo test -p vidworker --test it chaos -- --nocapture
//! ```
//!
//! (`CHAOS_SEED` repeats a run; the summary line prints it.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use testkit::{Action, HttpProxy, Rule, TcpMode, TcpProxy};
use uuid::Uuid;
use worker::db::Status;

use crate::binary::*;
use crate::support::*;

/// A small, fast pseudo-random sequence (xorshift64*): enough to spread
/// faults, and the same for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 0 to n - 1.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The uploads: mostly short videos, some that fail on their input.
const UPLOADS: &[&str] = &[
    "gray-720p.mp4",
    "short-0.4s.mp4",
    "tiny-64x64.mp4",
    "portrait-rotated.mp4",
    "gray-720p.mp4",
    "audio-only.m4a",
    "truncated.mp4",
];

/// The fleet and the faults between it and its services.
struct Fleet<'a> {
    stack: &'a Stack,
    db: TcpProxy,
    aws: HttpProxy,
    topic: String,
    workers: Vec<Option<BinaryWorker>>,
    started: usize,
}

impl Fleet<'_> {
    fn start_worker(&mut self, slot: usize) {
        self.started += 1;
        let db_url = self.db.url_for(&self.stack.database_url);
        let endpoint = self.aws.endpoint();
        let name = format!("chaos-{slot}-{}", self.started);
        self.workers[slot] = Some(self.stack.spawn_binary(
            &name,
            &[
                ("DATABASE_URL", db_url.as_str()),
                ("AWS_ENDPOINT_URL", endpoint.as_str()),
                ("EVENTS_TOPIC_ARN", self.topic.as_str()),
                ("DATABASE_CALL_TIMEOUT", "5"),
                ("RECONCILE_INTERVAL", "2"),
                ("STRANDED_AFTER", "20"),
                ("SHUTDOWN_GRACE", "5"),
                ("WORKER_PREFETCH", "1"),
            ],
        ));
    }

    /// Applies one fault; returns its kind.
    async fn fault(&mut self, rng: &mut Rng, ids: &[Uuid]) -> &'static str {
        let slot = rng.below(self.workers.len() as u64) as usize;
        match rng.below(9) {
            0 => {
                if let Some(w) = self.workers[slot].as_mut() {
                    w.signal(Signal::KILL);
                    tokio::task::block_in_place(|| w.wait(Duration::from_secs(10)));
                }
                tokio::time::sleep(rng.millis(200, 2000)).await;
                self.start_worker(slot);
                "kill -9"
            }
            1 => {
                if let Some(w) = self.workers[slot].as_mut() {
                    w.signal(Signal::TERM);
                    tokio::task::block_in_place(|| w.wait(Duration::from_secs(60)));
                }
                self.start_worker(slot);
                "SIGTERM"
            }
            2 => {
                self.database(TcpMode::Refuse, rng.millis(1000, 4000), "postgres refused")
                    .await
            }
            3 => {
                self.database(TcpMode::Blackhole, rng.millis(1000, 4000), "postgres blackholed")
                    .await
            }
            4 => {
                let delay = TcpMode::Delay(rng.millis(100, 600));
                self.database(delay, rng.millis(2000, 5000), "postgres slow").await
            }
            5 => {
                let service = ["s3:", "sqs:", "sns:"][rng.below(3) as usize];
                let rule = Rule::new(service).action(Action::Fail).times(1 + rng.below(15) as u32);
                let id = self.aws.add_rule(rule).expect("rule");
                tokio::time::sleep(rng.millis(1000, 4000)).await;
                let _ = self.aws.remove_rule(id);
                "503s"
            }
            6 => {
                let op =
                    ["s3:PUT", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "s3:GET"][rng.below(4) as usize];
                let id = self
                    .aws
                    .add_rule(Rule::new(op).action(Action::HoldResponse))
                    .expect("rule");
                tokio::time::sleep(rng.millis(1000, 3000)).await;
                let _ = self.aws.remove_rule(id);
                "held requests"
            }
            7 => {
                let id = ids[rng.below(ids.len() as u64) as usize];
                self.stack.send_raw(&worker::message::body(id)).await;
                "duplicate message"
            }
            _ => {
                let reconciler = self.stack.reconciler(Duration::from_secs(20), Duration::from_secs(60));
                let _ = reconciler.run_once().await;
                "reconciliation pass"
            }
        }
    }

    async fn database(&self, mode: TcpMode, lasting: Duration, kind: &'static str) -> &'static str {
        self.db.set_mode(mode).expect("mode");
        tokio::time::sleep(lasting).await;
        self.db.set_mode(TcpMode::Pass).expect("pass");
        kind
    }

    /// Every worker running, and stopped again at the end.
    fn ensure_running(&mut self) {
        for slot in 0..self.workers.len() {
            let exited = self.workers[slot]
                .as_mut()
                .is_none_or(|w| w.child.try_wait().ok().flatten().is_some());
            if exited {
                self.start_worker(slot);
            }
        }
    }

    fn stop_all(&mut self) {
        for w in self.workers.iter_mut().flatten() {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(w.pid()).expect("pid"), Signal::TERM);
        }
        for w in self.workers.iter_mut().flatten() {
            tokio::task::block_in_place(|| w.wait(Duration::from_secs(60)));
        }
    }
}

/// Every event the subscriber got: read until its queue stays empty (a
/// fixed window reads only part of a long run's events).
async fn every_event(stack: &Stack, subscriber: &str) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    loop {
        let batch = stack.events(subscriber, Duration::from_secs(3)).await;
        if batch.is_empty() {
            return events;
        }
        events.extend(batch);
    }
}

/// What the checks found.
#[derive(Debug, Default)]
struct Verdict {
    lost: usize,
    stale: usize,
    /// Final outcomes whose event never came.
    unannounced: usize,
    doubled: usize,
    redelivered: usize,
    processed: usize,
    failed: usize,
}

async fn verdict(stack: &Stack, ids: &[Uuid], events: &[serde_json::Value]) -> Verdict {
    let mut v = Verdict::default();
    let mut by_video: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        by_video
            .entry(e["video_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(e["id"].as_str().unwrap_or_default().to_owned());
    }
    for id in ids {
        let row = stack.row(*id).await;
        match row.status {
            Status::Processed => v.processed += 1,
            Status::Failed => v.failed += 1,
            Status::Pending | Status::Processing => v.lost += 1,
        }
        if row.status == Status::Processed {
            let mut recorded: Vec<String> = [row.processed_key.clone(), row.poster_key.clone()]
                .into_iter()
                .flatten()
                .collect();
            recorded.sort();
            let mut present = stack.storage.list(&format!("processed/{id}/")).await.expect("list");
            present.sort();
            if present != recorded {
                v.stale += 1;
            }
        }
        let seen = by_video.get(&id.to_string()).cloned().unwrap_or_default();
        let distinct: HashSet<&String> = seen.iter().collect();
        let want = row.event_id.map(|e| e.to_string());
        if row.status.is_final() && distinct.is_empty() {
            v.unannounced += 1;
        } else if row.status.is_final() && (distinct.len() != 1 || want.as_ref().is_none_or(|w| !distinct.contains(w)))
        {
            v.doubled += 1;
        }
        v.redelivered += seen.len().saturating_sub(distinct.len());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_under_random_faults_loses_nothing_and_repeats_nothing() {
    let jobs = setting("CHAOS_JOBS", 10) as usize;
    let faults = setting("CHAOS_FAULTS", 8);
    let workers = setting("CHAOS_WORKERS", 2) as usize;
    let seed = setting("CHAOS_SEED", 0x5eed) | 1;
    let mut rng = Rng(seed);
    let stack = Stack::start(Duration::from_secs(10)).await;
    let (topic, subscriber) = stack.subscribed_topic().await;
    let mut fleet = Fleet {
        stack: &stack,
        db: TcpProxy::start(stack.pg.port()).expect("TCP proxy"),
        aws: stack.http_proxy(),
        topic,
        workers: (0..workers).map(|_| None).collect(),
        started: 0,
    };
    fleet.ensure_running();
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut kinds: BTreeMap<&str, u32> = BTreeMap::new();
    for n in 0..faults {
        // Uploads arrive through the run, a few at a time.
        while ids.len() < jobs && ids.len() as u64 <= (n + 1) * jobs as u64 / faults.max(1) {
            ids.push(stack.submit(UPLOADS[rng.below(UPLOADS.len() as u64) as usize]).await);
        }
        tokio::time::sleep(rng.millis(300, 2500)).await;
        *kinds.entry(fleet.fault(&mut rng, &ids).await).or_default() += 1;
    }
    while ids.len() < jobs {
        ids.push(stack.submit(UPLOADS[rng.below(UPLOADS.len() as u64) as usize]).await);
    }
    // The faults stop; the fleet settles everything.
    fleet.aws.clear().expect("no rules");
    fleet.db.set_mode(TcpMode::Pass).expect("pass");
    fleet.ensure_running();
    let limit = Duration::from_secs(300 + 4 * jobs as u64);
    stack.wait_settled(&ids, limit).await;
    stack
        .wait_for(Duration::from_secs(120), "the queue drained", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    fleet.stop_all();
    // What the outbox still holds goes out, as the fleet's reconciler would.
    let reconciler = stack
        .reconciler(Duration::from_secs(3600), Duration::from_secs(3600))
        .with_publisher(worker::completion::Publisher::new(
            &stack.clients,
            Some(&fleet.topic),
            None,
        ));
    // A worker the faults killed may hold the reconciler lease for 30 s.
    stack
        .wait_for(Duration::from_secs(60), "the fleet's reconciler lease", || async {
            reconciler.run_once().await.expect("pass")
        })
        .await;
    let events = every_event(&stack, &subscriber).await;
    let v = verdict(&stack, &ids, &events).await;
    println!(
        "chaos: seed {seed}, {jobs} jobs ({} processed, {} failed) across {workers} workers, \
         {faults} faults {kinds:?} in {:.0} s: lost {}, stuck 0 (checked below), stale {}, unannounced {}, \
         doubled outcomes {}, event redeliveries {}",
        v.processed,
        v.failed,
        started.elapsed().as_secs_f64(),
        v.lost,
        v.stale,
        v.unannounced,
        v.doubled,
        v.redelivered
    );
    assert_eq!(
        (v.lost, v.stale, v.unannounced, v.doubled),
        (0, 0, 0, 0),
        "seed {seed}: {v:?}"
    );
    // Stuck: the queue, the dead letters, job directories and uploads.
    stack.check_invariants(&ids).await;
}

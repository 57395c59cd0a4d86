//! What happens to jobs, told once: each [`Event`] writes its log line and
//! counts itself, in [`Stats`] and in the Prometheus [`metrics`], in the
//! same call, as Vector's internal events do. The `event` field of every
//! line is stable, so a log-based metric can count it too. Installing a log
//! subscriber is the binary's business; [`server`] serves the metrics and
//! the health endpoints, and [`notify`] tells systemd the same.

mod health;
mod metrics;
pub mod notify;
pub(crate) mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use processor::Report;
use uuid::Uuid;

pub use self::health::{Health, HealthLimits};
use self::metrics::Metrics;
pub use self::metrics::Stage;

/// How many jobs ended which way since the worker started, the metrics,
/// and the loops' health.
#[derive(Debug, Default)]
pub struct Stats {
    /// Renditions made and recorded.
    pub processed: AtomicU64,
    /// Videos marked failed, and messages for unknown videos.
    pub failed: AtomicU64,
    /// Jobs handed back for a later retry.
    pub retried: AtomicU64,
    /// Duplicate deliveries of processed videos.
    pub duplicates: AtomicU64,
    /// Messages moved to the dead-letter queue by the worker.
    pub dead_lettered: AtomicU64,
    /// Jobs handed back at shutdown.
    pub released: AtomicU64,
    /// Messages put back because another worker held the video.
    pub busy: AtomicU64,
    /// Failed attempts to receive messages (SQS unreachable).
    pub receive_errors: AtomicU64,
    /// Messages of stranded videos sent again by the reconciler.
    pub resent: AtomicU64,
    /// Abandoned videos returned to the queue by the reconciler.
    pub returned: AtomicU64,
    /// Videos the reconciler failed (stranded, or abandoned on their last
    /// attempt).
    pub repaired_failed: AtomicU64,
    /// The Prometheus families.
    pub(crate) metrics: Metrics,
    /// The loops' signs of life.
    pub health: Health,
}

impl Stats {
    /// A stage of a job took this long.
    pub fn stage(&self, stage: Stage, took: Duration) {
        self.metrics.stage(stage, took);
    }

    /// Runs a stage of a job and observes how long it took, whatever its
    /// result.
    pub async fn observe_stage<T>(&self, stage: Stage, work: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        // On the heap: the AWS SDK's futures are large.
        let out = Box::pin(work).await;
        self.stage(stage, started.elapsed());
        out
    }

    /// A visibility extension succeeded or failed.
    pub fn visibility_extension(&self, ok: bool) {
        self.metrics.visibility_extension(ok);
    }

    /// Bytes of originals downloaded.
    pub fn downloaded(&self, bytes: u64) {
        self.metrics.transferred("in", bytes);
    }

    /// Bytes of renditions uploaded.
    pub fn uploaded(&self, bytes: u64) {
        self.metrics.transferred("out", bytes);
    }

    /// A job waits for an unreachable service (`database` or `s3`).
    pub fn outage_wait(&self, service: &str) {
        self.metrics.outage_wait(service);
    }

    /// A job met a configuration error: counted, and the worker is not
    /// ready (`/readyz`) until a job succeeds again.
    pub fn configuration_error(&self, reason: &str) {
        self.metrics.configuration_errors.inc();
        self.health.misconfigured(reason);
    }

    /// A completion event could not be published (it stays in the outbox).
    pub fn publish_failed(&self, class: crate::failure::FailureClass) {
        self.metrics.publish_failed(class.as_str());
        if class == crate::failure::FailureClass::Configuration {
            self.metrics.configuration_errors.inc();
        }
    }

    /// The sandbox layers the transcode children run in (`None`: in the
    /// worker's process, none).
    pub fn sandbox(&self, layers: Option<&crate::isolate::sandbox::Layers>) {
        let on = |b: bool| i64::from(b);
        let layers = layers.copied().unwrap_or_default();
        let full_landlock = layers.landlock == crate::isolate::sandbox::Coverage::Full;
        for (layer, value) in [
            ("limits", on(layers.limits)),
            ("capabilities", on(layers.capabilities)),
            ("landlock", on(full_landlock)),
            ("seccomp", on(layers.seccomp)),
        ] {
            self.metrics
                .sandbox
                .get_or_create(&metrics::LayerLabels { layer: layer.into() })
                .set(value);
        }
    }

    /// Jobs running now, out of `slots`.
    pub fn jobs_running(&self, running: usize, slots: usize) {
        self.metrics.in_flight.set(running as i64);
        self.metrics.free_slots.set(slots.saturating_sub(running) as i64);
    }

    /// Jobs running now (as last reported by the runner).
    pub fn running(&self) -> u64 {
        self.metrics.in_flight.get().max(0) as u64
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs the totals (at shutdown).
    pub fn log(&self) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            processed = get(&self.processed),
            failed = get(&self.failed),
            retried = get(&self.retried),
            duplicates = get(&self.duplicates),
            dead_lettered = get(&self.dead_lettered),
            released = get(&self.released),
            busy = get(&self.busy),
            receive_errors = get(&self.receive_errors),
            resent = get(&self.resent),
            returned = get(&self.returned),
            repaired_failed = get(&self.repaired_failed),
            "worker stopped"
        );
    }
}

/// One thing that happened to a job or to the loop.
#[derive(Debug)]
pub enum Event<'a> {
    /// A video was claimed for processing.
    Claimed {
        /// The video.
        video_id: Uuid,
        /// Attempts so far, this one included.
        attempt: i32,
        /// The original's key.
        original_key: &'a str,
    },
    /// A rendition was made and recorded.
    Processed {
        /// The video.
        video_id: Uuid,
        /// The rendition's key.
        key: &'a str,
        /// What the transcode produced.
        report: &'a Report,
        /// The whole job, download to record.
        took: Duration,
    },
    /// A video was marked failed.
    Failed {
        /// The video.
        video_id: Uuid,
        /// The failure's stable name.
        kind: &'a str,
        /// The one-line reason stored in the row.
        reason: &'a str,
        /// Whether retrying could not help.
        permanent: bool,
    },
    /// A job was handed back to be retried after `delay`.
    Retry {
        /// The video.
        video_id: Uuid,
        /// The failure's stable name.
        kind: &'a str,
        /// Why.
        reason: &'a str,
        /// When the message comes back.
        delay: Duration,
        /// Receives so far.
        receives: u32,
    },
    /// A job was handed back at shutdown.
    Released {
        /// The video.
        video_id: Uuid,
    },
    /// A duplicate delivery of a processed video.
    Duplicate {
        /// The video.
        video_id: Uuid,
    },
    /// A late delivery of a video that failed for good.
    AlreadyFailed {
        /// The video.
        video_id: Uuid,
    },
    /// A stray copy of a message an operator's requeue superseded.
    Stale {
        /// The video.
        video_id: Uuid,
    },
    /// A message for a video the database does not know.
    UnknownVideo {
        /// The video.
        video_id: Uuid,
    },
    /// Another worker holds the video: the job waits for it, the message
    /// kept hidden.
    Busy {
        /// The video.
        video_id: Uuid,
        /// What is left of the other worker's lease.
        delay: Duration,
    },
    /// A message went to the dead-letter queue.
    DeadLettered {
        /// SQS's id of the message.
        message_id: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// Receiving failed (SQS unreachable); the loop waits and tries again.
    ReceiveFailed {
        /// What the SDK said.
        error: &'a str,
        /// How long the loop waits.
        retry_in: Duration,
    },
    /// The reconciler sent a stranded video's message again.
    Resent {
        /// The video.
        video_id: Uuid,
        /// Re-sends so far, this one included.
        resends: i32,
    },
    /// The reconciler returned a video whose worker is gone to the queue.
    Returned {
        /// The video.
        video_id: Uuid,
    },
    /// The reconciler gave up on a video: stranded after its last
    /// re-send, or abandoned on its last attempt.
    GaveUp {
        /// The video.
        video_id: Uuid,
        /// `stranded` or `abandoned`.
        kind: &'a str,
        /// The reason stored in the row.
        reason: &'a str,
    },
}

impl Event<'_> {
    /// Logs the event and counts it.
    pub fn emit(&self, stats: &Stats) {
        self.count(stats);
        self.log();
    }

    /// The counters this event moves: the test-facing [`Stats`] and the
    /// Prometheus families.
    fn count(&self, stats: &Stats) {
        let m = &stats.metrics;
        let (counter, outcome, kind): (Option<&AtomicU64>, Option<&str>, &str) = match *self {
            Event::Claimed { .. } => (None, None, "none"),
            Event::Processed { report, .. } => {
                m.speed.observe(report.speed);
                stats.health.configured();
                (Some(&stats.processed), Some("processed"), "none")
            }
            Event::Failed { kind, .. } => (Some(&stats.failed), Some("failed"), kind),
            Event::Retry { kind, .. } => (Some(&stats.retried), Some("retried"), kind),
            Event::Released { .. } => (Some(&stats.released), Some("released"), "shutdown"),
            Event::Duplicate { .. } => (Some(&stats.duplicates), Some("duplicate"), "none"),
            Event::AlreadyFailed { .. } => (None, Some("already_failed"), "none"),
            Event::Stale { .. } => (None, Some("stale"), "none"),
            Event::UnknownVideo { .. } => (Some(&stats.failed), Some("unknown_video"), "none"),
            Event::Busy { .. } => (Some(&stats.busy), Some("busy"), "none"),
            Event::DeadLettered { .. } => (Some(&stats.dead_lettered), Some("dead_lettered"), "none"),
            Event::ReceiveFailed { .. } => {
                m.receive_errors.inc();
                (Some(&stats.receive_errors), None, "none")
            }
            Event::Resent { .. } => {
                m.reconciled("resent");
                (Some(&stats.resent), None, "none")
            }
            Event::Returned { .. } => {
                m.reconciled("returned");
                (Some(&stats.returned), None, "none")
            }
            Event::GaveUp { kind, .. } => {
                m.reconciled(kind);
                (Some(&stats.repaired_failed), None, "none")
            }
        };
        if let Some(c) = counter {
            Stats::bump(c);
        }
        if let Some(outcome) = outcome {
            m.job(outcome, kind);
        }
    }

    /// The log line.
    fn log(&self) {
        match *self {
            Event::Claimed {
                video_id,
                attempt,
                original_key,
            } => tracing::info!(event = "claimed", %video_id, attempt, original_key, "job started"),
            Event::Processed {
                video_id,
                key,
                report,
                took,
            } => tracing::info!(
                event = "processed",
                %video_id,
                key,
                duration_s = report.duration.as_secs_f64(),
                bytes = report.bytes,
                transcode_s = report.elapsed.as_secs_f64(),
                speed = report.speed,
                job_s = took.as_secs_f64(),
                "job processed"
            ),
            Event::Failed {
                video_id,
                kind,
                reason,
                permanent,
            } => tracing::warn!(event = "failed", %video_id, kind, permanent, reason, "job failed"),
            Event::Retry {
                video_id,
                kind,
                reason,
                delay,
                receives,
            } => {
                tracing::warn!(event = "retry", %video_id, kind, receives, retry_in_s = delay.as_secs(), reason, "job will be retried")
            }
            Event::Released { video_id } => {
                tracing::info!(event = "released", %video_id, "job handed back at shutdown")
            }
            Event::Duplicate { video_id } => {
                tracing::info!(event = "duplicate", %video_id, "already processed; message deleted")
            }
            Event::AlreadyFailed { video_id } => {
                tracing::info!(event = "already_failed", %video_id, "the video failed earlier; message deleted")
            }
            Event::Stale { video_id } => {
                tracing::info!(event = "stale", %video_id, "a stray copy of a superseded message; deleted")
            }
            Event::UnknownVideo { video_id } => {
                tracing::warn!(event = "unknown_video", %video_id, "no such video (yet)")
            }
            Event::Busy { video_id, delay } => {
                tracing::info!(event = "busy", %video_id, lease_left_s = delay.as_secs(), "another worker holds this video; waiting for it")
            }
            Event::DeadLettered { .. }
            | Event::ReceiveFailed { .. }
            | Event::Resent { .. }
            | Event::Returned { .. }
            | Event::GaveUp { .. } => self.log_fleet(),
        }
    }

    /// The log line of an event about the queue or the fleet rather than
    /// one job.
    fn log_fleet(&self) {
        match *self {
            Event::DeadLettered { message_id, reason } => {
                tracing::error!(
                    event = "dead_lettered",
                    message_id,
                    reason,
                    "message moved to the dead-letter queue"
                )
            }
            Event::ReceiveFailed { error, retry_in } => {
                tracing::warn!(
                    event = "receive_failed",
                    error,
                    retry_in_s = retry_in.as_secs(),
                    "cannot receive; will retry"
                )
            }
            Event::Resent { video_id, resends } => {
                tracing::warn!(event = "resent", %video_id, resends, "re-sent a stranded video's message")
            }
            Event::Returned { video_id } => {
                tracing::warn!(event = "returned", %video_id, "returned a video whose worker is gone to the queue")
            }
            Event::GaveUp { video_id, kind, reason } => {
                tracing::error!(event = kind, %video_id, reason, "the reconciler failed a video")
            }
            // Job events: [`Event::log`], whose match is exhaustive, logs them.
            _ => {}
        }
    }
}

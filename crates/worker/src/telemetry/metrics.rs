//! The worker's Prometheus metrics, in a registry of its own (no global
//! recorder): what `/metrics` serves. [`super::Event::emit`] and the
//! observation methods of [`super::Stats`] update them.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::failure::FailureClass;

/// A job's end, and the kind of failure (`none` when it did not fail).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobLabels {
    pub outcome: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StageLabels {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabels {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ActionLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClassLabels {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LayerLabels {
    pub layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// A stage of a job, for the duration histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Fetching the original from S3.
    Download,
    /// Running the processor.
    Transcode,
    /// Storing the rendition in S3.
    Upload,
    /// Writing the outcome to PostgreSQL.
    Record,
}

impl Stage {
    /// Every stage, in a job's order.
    const ALL: [Stage; 4] = [Stage::Download, Stage::Transcode, Stage::Upload, Stage::Record];

    fn label(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Transcode => "transcode",
            Stage::Upload => "upload",
            Stage::Record => "record",
        }
    }
}

/// The reconciler's repairs, the `action` label of `vidworker_reconciled`.
const RECONCILE_ACTIONS: [&str; 4] = ["resent", "returned", "stranded", "abandoned"];

/// The services a job waits out an outage of (`JobError::service`), the
/// `service` label of `vidworker_outage_waits`.
const OUTAGE_SERVICES: [&str; 3] = ["database", "s3", "sqs"];

/// Every metric family, cheap to clone (they share their values).
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    pub jobs: Family<JobLabels, Counter>,
    pub stage_seconds: Family<StageLabels, Histogram>,
    /// The histogram's sum and count again, as counters: the CloudWatch
    /// agent drops histograms (deploy/cloudwatch.py), so its dashboard
    /// divides these instead.
    pub stage_seconds_total: Family<StageLabels, Counter<f64, AtomicU64>>,
    pub stage_runs: Family<StageLabels, Counter>,
    pub in_flight: Gauge,
    pub free_slots: Gauge,
    pub visibility_extensions: Family<ResultLabels, Counter>,
    pub bytes: Family<DirectionLabels, Counter>,
    pub speed: Histogram,
    pub receive_errors: Counter,
    pub outage_waits: Family<ServiceLabels, Counter>,
    pub configuration_errors: Counter,
    pub reconciled: Family<ActionLabels, Counter>,
    pub publish_failures: Family<ClassLabels, Counter>,
    pub sandbox: Family<LayerLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            jobs: Family::default(),
            stage_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.05, 2.0, 14))),
            stage_seconds_total: Family::default(),
            stage_runs: Family::default(),
            in_flight: Gauge::default(),
            free_slots: Gauge::default(),
            visibility_extensions: Family::default(),
            bytes: Family::default(),
            speed: Histogram::new([0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0]),
            receive_errors: Counter::default(),
            outage_waits: Family::default(),
            configuration_errors: Counter::default(),
            reconciled: Family::default(),
            publish_failures: Family::default(),
            sandbox: Family::default(),
        };
        metrics.create_known_series();
        metrics
    }
}

impl Metrics {
    /// Creates, at 0, the series of every label value known in advance, so
    /// that every family is in `/metrics` from the start. A missing series
    /// is invisible to a scraper until it first counts, and the CloudWatch
    /// agent sends a counter's change between two scrapes: nothing for the
    /// first scrape that shows a series, so a series born at 1 (the first
    /// stranded video, which an alarm waits for) would never arrive.
    /// `vidworker_jobs` is left out: its outcome and kind pairs are many,
    /// and its first job comes soon.
    fn create_known_series(&self) {
        for stage in Stage::ALL {
            let labels = StageLabels {
                stage: stage.label().to_owned(),
            };
            self.stage_seconds_total.get_or_create(&labels).inc_by(0.0);
            self.stage_runs.get_or_create(&labels).inc_by(0);
        }
        for action in RECONCILE_ACTIONS {
            let labels = ActionLabels {
                action: action.to_owned(),
            };
            self.reconciled.get_or_create(&labels).inc_by(0);
        }
        for result in ["ok", "failed"] {
            let labels = ResultLabels {
                result: result.to_owned(),
            };
            self.visibility_extensions.get_or_create(&labels).inc_by(0);
        }
        for service in OUTAGE_SERVICES {
            let labels = ServiceLabels {
                service: service.to_owned(),
            };
            self.outage_waits.get_or_create(&labels).inc_by(0);
        }
        for class in [FailureClass::Outage, FailureClass::Configuration] {
            let labels = ClassLabels {
                class: class.as_str().to_owned(),
            };
            self.publish_failures.get_or_create(&labels).inc_by(0);
        }
    }

    /// The stage families: the histogram, and its sum and count again as
    /// counters for collectors that drop histograms (the CloudWatch agent).
    fn register_stages(&self, r: &mut Registry) {
        r.register_with_unit(
            "stage_duration",
            "Time spent in each stage of a job",
            Unit::Seconds,
            self.stage_seconds.clone(),
        );
        r.register_with_unit(
            "stage",
            "Time spent in each stage, all jobs together (stage_duration's sum, as a counter for collectors that \
             drop histograms)",
            Unit::Seconds,
            self.stage_seconds_total.clone(),
        );
        r.register(
            "stage_runs",
            "Stages run, by stage (stage_duration's count, as a counter for collectors that drop histograms)",
            self.stage_runs.clone(),
        );
    }

    /// A registry with every family, named `vidworker_*`.
    pub(crate) fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("vidworker");
        r.register(
            "jobs",
            "Jobs by how they ended (processed, failed, retried, released, duplicate, already_failed, unknown_video, busy, \
             dead_lettered) and the kind of failure",
            self.jobs.clone(),
        );
        self.register_stages(&mut r);
        r.register("jobs_in_flight", "Jobs running now", self.in_flight.clone());
        r.register(
            "job_slots_free",
            "Job slots free for new messages",
            self.free_slots.clone(),
        );
        r.register(
            "visibility_extensions",
            "Extensions of running jobs' message visibility, by result",
            self.visibility_extensions.clone(),
        );
        r.register_with_unit(
            "transferred",
            "Bytes downloaded (originals, in) and uploaded (renditions, out)",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "transcode_speed",
            "Media time produced per second of wall-clock time (x real time), per job",
            self.speed.clone(),
        );
        r.register(
            "receive_errors",
            "Failed receives from the queue",
            self.receive_errors.clone(),
        );
        r.register(
            "outage_waits",
            "Waits for an unreachable service (database, s3) during a job",
            self.outage_waits.clone(),
        );
        r.register(
            "configuration_errors",
            "Jobs handed back because the worker is misconfigured (permissions, missing bucket, schema)",
            self.configuration_errors.clone(),
        );
        r.register(
            "reconciled",
            "Repairs by the reconciler (resent, returned, stranded, abandoned)",
            self.reconciled.clone(),
        );
        r.register(
            "event_publish_failures",
            "Completion events that could not be published when their outcome was recorded (left in the outbox \
             for the reconciler), by failure class (outage, configuration)",
            self.publish_failures.clone(),
        );
        r.register(
            "sandbox_layer",
            "Whether each layer of the transcode children's sandbox is in force (1) or not (0): limits, \
             capabilities, landlock, seccomp; none of them when transcodes run in the worker's process",
            self.sandbox.clone(),
        );
        r.register(
            "build",
            "The running build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                commit: crate::COMMIT.to_owned(),
            }),
        );
        r
    }

    pub(crate) fn job(&self, outcome: &str, kind: &str) {
        self.jobs
            .get_or_create(&JobLabels {
                outcome: outcome.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub(crate) fn stage(&self, stage: Stage, took: Duration) {
        let labels = StageLabels {
            stage: stage.label().to_owned(),
        };
        self.stage_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        self.stage_seconds_total
            .get_or_create(&labels)
            .inc_by(took.as_secs_f64());
        self.stage_runs.get_or_create(&labels).inc();
    }

    pub(crate) fn visibility_extension(&self, ok: bool) {
        self.visibility_extensions
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    pub(crate) fn transferred(&self, direction: &str, bytes: u64) {
        self.bytes
            .get_or_create(&DirectionLabels {
                direction: direction.to_owned(),
            })
            .inc_by(bytes);
    }

    pub(crate) fn outage_wait(&self, service: &str) {
        self.outage_waits
            .get_or_create(&ServiceLabels {
                service: service.to_owned(),
            })
            .inc();
    }

    pub(crate) fn publish_failed(&self, class: &str) {
        self.publish_failures
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .inc();
    }

    pub(crate) fn reconciled(&self, action: &str) {
        self.reconciled
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
    }
}

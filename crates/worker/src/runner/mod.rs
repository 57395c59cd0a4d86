//! The worker loop: receive no more messages than there are free job slots,
//! run each job (claim → download → transcode → upload → record → delete)
//! while a heartbeat keeps its message hidden and its lease alive, and
//! settle each message with one decision ([`settle::decide`]).
//!
//! The order of the final steps (upload to a key of the claim's own, then
//! record it in the row fenced on the claim's token, then delete the
//! message) means a crash anywhere repeats work at worst and never loses
//! it, and a worker whose lease ran out can neither overwrite the outcome
//! of the one that took over nor the rendition it recorded. The
//! [`reconcile`] loop repairs what a crash or a lost message leaves behind.

mod error;
mod heartbeat;
mod job;
mod patience;
pub mod preflight;
mod progress;
pub mod reconcile;
mod settle;
mod stop;
mod work;
mod workdir;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::error::JobError;
use self::reconcile::Reconciler;
use self::workdir::WorkRoot;
use crate::completion::Publisher;
use crate::config::WorkerSettings;
use crate::db::Db;
use crate::isolate::Isolation;
use crate::queue::{Queue, Received};
use crate::shutdown::Shutdown;
use crate::storage::Storage;
use crate::telemetry::notify::Notifier;
use crate::telemetry::{self, Event, HealthLimits, Stats};

/// Longest wait between two receives while SQS is unreachable.
const MAX_RECEIVE_BACKOFF: Duration = Duration::from_secs(30);
/// How long, after the grace period, cancelled jobs get to hand their
/// videos back before the worker stops anyway: each hands its message back
/// first and then writes its row with a shorter deadline of its own, so
/// this is rarely waited out; what a hung service leaves, the messages'
/// visibility timeout and the reconciler repair. `deploy/check.py` checks
/// that the unit's stop timeout covers the grace period plus this.
pub const HANDBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Receives a video may spend without a counted attempt: hand-backs at
/// shutdown and after configuration errors. The queue's maxReceiveCount
/// should leave room for them above MAX_ATTEMPTS.
const HANDBACK_RECEIVES: u32 = 2;

/// Why a worker could not start; the message names the service.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The private working directory could not be made.
    #[error("working directory in {}: {source}", path.display())]
    WorkDir {
        /// The parent directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The database is unreachable or not migrated.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// The queue is unreachable.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// The bucket is unreachable.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The metrics address is taken or not allowed.
    #[error("metrics address {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Transcode children cannot start, or (`SANDBOX=required`) cannot
    /// confine themselves fully.
    #[error("transcodes in a child process: {0}")]
    Isolation(#[from] crate::isolate::ChildError),
    /// A setting, or an asset of the rendition, cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The job queue's redrive policy would dead-letter videos that still
    /// have attempts left.
    #[error(
        "queue {queue}: its redrive policy's maxReceiveCount {max_receive_count} is below MAX_ATTEMPTS \
         {max_attempts}: SQS would dead-letter videos that still have attempts left (raise maxReceiveCount to \
         at least {}, or lower MAX_ATTEMPTS)",
        max_attempts + HANDBACK_RECEIVES
    )]
    RedrivePolicy {
        /// The queue's URL.
        queue: String,
        /// Its `maxReceiveCount`.
        max_receive_count: u32,
        /// The worker's `MAX_ATTEMPTS`.
        max_attempts: u32,
    },
    /// The database has no videos while the queue has messages: most
    /// likely the wrong database, whose every message would be refused.
    #[error(
        "database {database} has no videos while the queue holds {messages} messages: is DATABASE_URL right? \
         (set ALLOW_EMPTY_DATABASE=true to start anyway)"
    )]
    EmptyDatabase {
        /// The URL without its password.
        database: String,
        /// Visible messages in the queue.
        messages: u64,
    },
}

/// The worker service: its settings, its three services, and the loop
/// that feeds jobs from the queue.
#[derive(Debug)]
pub struct Runner {
    settings: WorkerSettings,
    db: Db,
    storage: Storage,
    queue: Queue,
    stats: Arc<Stats>,
    /// This worker's directory for its jobs; made by [`Runner::start`].
    work_root: Option<WorkRoot>,
    /// The endpoints' socket, bound by [`Runner::start`].
    listener: Option<tokio::net::TcpListener>,
    /// Jobs running now.
    running: AtomicUsize,
    /// Transcode slots: `concurrency` of them; the jobs taken beyond them
    /// (`prefetch`) download or upload meanwhile.
    transcoders: Arc<Semaphore>,
    /// Where completion events go.
    publisher: Publisher,
}

impl Runner {
    /// A worker over these services.
    pub fn new(settings: WorkerSettings, db: Db, storage: Storage, queue: Queue) -> Self {
        Runner {
            transcoders: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            db,
            storage,
            queue,
            stats: Arc::new(Stats::default()),
            work_root: None,
            listener: None,
            running: AtomicUsize::new(0),
            publisher: Publisher::default(),
        }
    }

    /// Publishes completion events with `publisher`.
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = publisher;
        self
    }

    /// The database handle (for `--migrate` before the start).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The counters, metrics and health of this worker.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Where the endpoints are served, once started.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    fn job_started(&self) {
        let running = self.running.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.jobs_running(running, self.settings.concurrency);
    }

    fn job_ended(&self) {
        let running = self.running.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.stats.jobs_running(running, self.settings.concurrency);
    }

    /// Makes the working directory and checks the database, the queue and
    /// the bucket, naming the one that fails.
    pub async fn start(mut self) -> Result<Self, StartError> {
        let temp = &self.settings.temp_dir;
        self.work_root = Some(WorkRoot::create(temp).map_err(|source| StartError::WorkDir {
            path: temp.clone(),
            source,
        })?);
        if let Some(addr) = self.settings.metrics_addr {
            let listener = telemetry::server::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            self.listener = Some(listener);
        }
        processor::check_spec(&self.settings.spec).map_err(crate::config::ConfigError::from)?;
        let isolation = self.check_isolation().await?;
        self.db.check().await?;
        self.db.check_schema().await?;
        let info = self.queue.inspect().await?;
        self.storage.check(&self.settings.processed_prefix).await?;
        if !self.settings.allow_empty_database && self.db.is_empty().await? {
            let messages = self.queue.depth().await?;
            if messages > 0 {
                return Err(StartError::EmptyDatabase {
                    database: self.db.label().to_owned(),
                    messages,
                });
            }
        }
        self.check_redrive_policy(info.max_receive_count)?;
        tracing::info!(
            worker = %self.settings.worker_id,
            concurrency = self.settings.concurrency,
            threads_per_job = self.settings.spec.threads,
            isolation,
            visibility_timeout_s = self.settings.visibility_timeout.as_secs(),
            max_attempts = self.settings.max_attempts,
            queue = self.queue.url(),
            dead_letter_queue = self.queue.dead_letter_url().unwrap_or("none"),
            bucket = self.storage.bucket(),
            metrics = %self.metrics_addr().map_or_else(|| "off".to_owned(), |a| a.to_string()),
            version = env!("CARGO_PKG_VERSION"),
            commit = crate::COMMIT,
            "worker ready"
        );
        Ok(self)
    }

    /// Starts one transcode child that only confines itself: children
    /// start at all, and the log and `/metrics` say which sandbox layers
    /// are in force. `SANDBOX=required` makes a missing layer fatal (the
    /// child refuses, naming the layers it has).
    async fn check_isolation(&self) -> Result<String, StartError> {
        let Isolation::Child(child) = &self.settings.isolation else {
            self.stats.sandbox(None);
            return Ok("in-process (no sandbox)".to_owned());
        };
        let layers = child.check(&self.settings.spec).await?;
        self.stats.sandbox(Some(&layers));
        if !layers.complete() {
            tracing::warn!(
                sandbox = layers.describe(),
                "the transcode sandbox lacks layers this kernel does not offer; SANDBOX=required would refuse to start"
            );
        }
        Ok(format!("child, sandbox: {}", layers.describe()))
    }

    /// Refuses a redrive policy that would dead-letter videos with attempts
    /// left: each attempt spends one receive, and SQS moves a message on
    /// its `maxReceiveCount`-th. Warns when it leaves no room for the
    /// receives hand-backs spend.
    fn check_redrive_policy(&self, max_receive_count: Option<u32>) -> Result<(), StartError> {
        let max_attempts = self.settings.max_attempts;
        match max_receive_count {
            Some(n) if n < max_attempts => {
                return Err(StartError::RedrivePolicy {
                    queue: self.queue.url().to_owned(),
                    max_receive_count: n,
                    max_attempts,
                });
            }
            Some(n) if n < max_attempts + HANDBACK_RECEIVES => tracing::warn!(
                queue_max_receive_count = n,
                max_attempts,
                "the queue's maxReceiveCount leaves no room above MAX_ATTEMPTS for hand-backs (shutdown, \
                 configuration errors): a video handed back often may be dead-lettered with attempts left"
            ),
            Some(_) => {}
            None => tracing::warn!(queue = self.queue.url(), "the queue has no dead-letter queue"),
        }
        Ok(())
    }

    /// Runs until `shutdown` stops intake, then lets running jobs finish
    /// within the grace period, cancels the rest and hands them back.
    pub async fn run(mut self, shutdown: Shutdown) -> Arc<Stats> {
        let work_root = self.work_root.take();
        let listener = self.listener.take();
        let this = Arc::new(self);
        this.stats.jobs_running(0, this.settings.concurrency);
        let stop_serving = CancellationToken::new();
        let server =
            listener.map(|l| telemetry::server::spawn(l, Arc::new(this.endpoints(&shutdown)), stop_serving.clone()));
        let tracker = TaskTracker::new();
        let reconciler = this
            .reconciler()
            .map(|r| tokio::spawn(r.run(shutdown.intake().clone())));
        // Under systemd (`Type=notify`): ready now, its watchdog fed while
        // the loops are alive, through the drain too.
        let notifier = Notifier::from_env().map(Arc::new);
        let watchdog = notifier.as_ref().and_then(|n| {
            n.send("READY=1\nSTATUS=taking jobs");
            Arc::clone(n).spawn_watchdog(Arc::clone(&this.stats), this.health_limits(), stop_serving.clone())
        });
        Arc::clone(&this)
            .take_jobs(&shutdown, &tracker, work_root.as_ref())
            .await;
        if let Some(r) = reconciler {
            r.abort();
        }
        if let Some(n) = &notifier {
            n.send("STOPPING=1\nSTATUS=draining the running jobs");
        }
        this.drain(&shutdown, &tracker).await;
        stop_serving.cancel();
        if let Some(server) = server {
            let _ = server.await;
        }
        if let Some(watchdog) = watchdog {
            let _ = watchdog.await;
        }
        if let Some(root) = work_root {
            root.remove();
        }
        this.stats.log();
        Arc::clone(&this.stats)
    }

    /// What `/metrics`, `/healthz` and `/readyz` look at.
    fn endpoints(&self, shutdown: &Shutdown) -> telemetry::server::Endpoints {
        telemetry::server::Endpoints::new(
            Arc::clone(&self.stats),
            self.health_limits(),
            self.db.clone(),
            self.queue.clone(),
            self.storage.clone(),
            self.settings.processed_prefix.clone(),
            shutdown.intake().clone(),
        )
    }

    /// How long each loop may go silent before `/healthz` (and systemd's
    /// watchdog) call the worker wedged.
    fn health_limits(&self) -> HealthLimits {
        let every = (self.settings.visibility_timeout / 3).max(Duration::from_millis(500));
        HealthLimits {
            receive: self.settings.receive_wait + Duration::from_secs(150),
            heartbeat: every * 3 + Duration::from_secs(30),
        }
    }

    /// The reconciler this worker runs, unless it is turned off.
    fn reconciler(&self) -> Option<Reconciler> {
        (!self.settings.reconcile_interval.is_zero()).then(|| {
            Reconciler::new(
                self.db.clone(),
                self.queue.clone(),
                reconcile::ReconcileSettings::of(&self.settings),
                Arc::clone(&self.stats),
            )
            .with_publisher(self.publisher.clone())
        })
    }

    /// The receive loop, until intake stops.
    async fn take_jobs(self: Arc<Self>, shutdown: &Shutdown, tracker: &TaskTracker, root: Option<&WorkRoot>) {
        // Slots for messages: the transcode slots plus the prefetched jobs.
        let slots = Arc::new(Semaphore::new(self.settings.concurrency + self.settings.prefetch));
        let jobs_dir = root.map(|r| r.path().to_owned());
        let mut backoff = Duration::from_secs(1);
        loop {
            // Wait for a free slot before asking for work, so no message
            // sits invisible waiting for one. The stop comes first (biased):
            // with a slot free both branches are ready, and an unbiased
            // select took the slot half the time, so a stopped worker kept
            // long-polling (seen: 8 s before the drain, SHUTDOWN_GRACE=0).
            let first = tokio::select! {
                biased;
                () = shutdown.intake().cancelled() => return,
                p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let mut permits = vec![first];
            while permits.len() < 10 {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // The receive in flight is cancelled when intake stops, so a
            // shutdown never waits out a long poll (up to 20 s of the stop
            // budget). SQS may have handed over a message in the instant
            // the call was dropped: it comes back after its visibility
            // timeout, like a message of a worker that died.
            self.stats.health.receiving();
            let receive = self.queue.receive(
                permits.len(),
                self.settings.receive_wait,
                self.settings.visibility_timeout,
            );
            let received = tokio::select! {
                biased;
                () = shutdown.intake().cancelled() => {
                    self.stats.health.received();
                    return;
                }
                r = receive => r,
            };
            self.stats.health.received();
            let messages = match received {
                Ok(m) => {
                    backoff = Duration::from_secs(1);
                    m
                }
                Err(e) => {
                    Event::ReceiveFailed {
                        error: &e.to_string(),
                        retry_in: backoff,
                    }
                    .emit(&self.stats);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.intake().cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_RECEIVE_BACKOFF);
                    continue;
                }
            };
            for msg in messages {
                match permits.pop().filter(|_| !shutdown.intake().is_cancelled()) {
                    Some(permit) => {
                        let (runner, dir) = (Arc::clone(&self), jobs_dir.clone());
                        let (intake, abort) = (shutdown.intake().clone(), shutdown.abort().clone());
                        tracker.spawn(async move {
                            runner.handle(msg, dir, intake, abort).await;
                            drop(permit);
                        });
                    }
                    None => self.hand_back_unstarted(&msg).await,
                }
            }
        }
    }

    /// Lets running jobs finish within the grace period; then cancels them
    /// and gives them a short time to hand their videos back.
    async fn drain(&self, shutdown: &Shutdown, tracker: &TaskTracker) {
        tracker.close();
        if !tracker.is_empty() {
            tracing::info!(
                running = tracker.len(),
                grace_s = self.settings.shutdown_grace.as_secs(),
                "waiting for running jobs"
            );
        }
        // A termination notice leaves less: the hand-back must fit before
        // the machine goes.
        let grace = match shutdown.deadline() {
            Some(deadline) => self.settings.shutdown_grace.min(
                deadline
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(HANDBACK_TIMEOUT),
            ),
            None => self.settings.shutdown_grace,
        };
        if tokio::time::timeout(grace, tracker.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(
            running = tracker.len(),
            "grace period over: cancelling running jobs and handing them back"
        );
        shutdown.abort_jobs();
        if tokio::time::timeout(HANDBACK_TIMEOUT, tracker.wait()).await.is_err() {
            tracing::error!(
                running = tracker.len(),
                "jobs did not hand back in time (a service hangs); their messages come back after the visibility \
                 timeout"
            );
        }
    }

    /// A message received during shutdown goes straight back.
    async fn hand_back_unstarted(&self, msg: &Received) {
        if let Err(e) = self.queue.set_visibility(&msg.receipt, Duration::ZERO).await {
            tracing::warn!(message_id = %msg.message_id, error = %e, "cannot hand a message back; it reappears after its visibility timeout");
        }
    }
}

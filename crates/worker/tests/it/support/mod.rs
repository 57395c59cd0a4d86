//! A real local stack per test: a throwaway PostgreSQL cluster and a moto
//! server (S3 + SQS), set up the way `vidworker migrate` and
//! `vidworker queue-init` set up production, plus helpers to run workers
//! in process and to check what a test leaves behind.
//!
//! Shared by the worker library's tests and the `vidworker` binary's
//! (which include this file with `#[path]` and add `binary.rs`).

#![allow(dead_code, reason = "each test binary uses part of the support")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use processor::RenditionSpec;
use testkit::{Moto, Postgres};
use uuid::Uuid;
use worker::aws::Clients;
use worker::config::WorkerSettings;
use worker::db::{Db, Phase, Status, VideoRow};
use worker::queue::{Queue, QueueSettings};
use worker::runner::Runner;
use worker::runner::reconcile::{ReconcileSettings, Reconciler};
use worker::shutdown::Shutdown;
use worker::storage::Storage;
use worker::telemetry::Stats;

pub const BUCKET: &str = "vidworker-test";
/// The stack's database.
pub const DATABASE: &str = "vidworker";
/// A job that takes several seconds: 30 s of output from a 40 s upload.
pub const SLOW: &str = "long-40s.mp4";
pub const QUEUE: &str = "vidworker-jobs";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

/// What `vidworker queue-init` does: the bucket, the queue and its
/// dead-letter queue. Returns (queue URL, dead-letter queue URL).
pub async fn queue_init(storage: &Storage, clients: &Clients, settings: &QueueSettings) -> (String, String) {
    storage
        .create_bucket(clients.region.as_deref())
        .await
        .expect("create the bucket");
    Queue::create(&clients.sqs, QUEUE, settings)
        .await
        .expect("create the queues")
}

pub struct Stack {
    pub pg: Postgres,
    pub moto: Moto,
    pub database_url: String,
    pub clients: Clients,
    pub db: Db,
    pub storage: Storage,
    pub queue: Queue,
    pub queue_url: String,
    pub dlq_url: String,
    /// Parent of every worker's job directories, to check they are removed.
    pub work_dir: tempfile::TempDir,
    pub visibility_timeout: Duration,
}

impl Stack {
    /// Starts PostgreSQL and moto, migrates, and creates the bucket and
    /// queues with a short visibility timeout and 3 receives.
    pub async fn start(visibility_timeout: Duration) -> Stack {
        Self::start_with(QueueSettings {
            visibility_timeout,
            ..QueueSettings::default()
        })
        .await
    }

    /// Like [`Stack::start`], with the queues set up as given.
    pub async fn start_with(settings: QueueSettings) -> Stack {
        let visibility_timeout = settings.visibility_timeout;
        let pg = Postgres::start().expect("PostgreSQL starts (run scripts/install-deps.sh)");
        let database_url = pg.create_database(DATABASE).expect("database");
        let moto = Moto::start().expect("moto starts (run scripts/install-deps.sh)");
        let clients = Clients::with_credentials("us-east-1", &moto.endpoint(), "test", "test").await;
        let db = Db::connect_lazy(&database_url, 8).expect("pool");
        db.migrate().await.expect("migrations apply");
        let storage = Storage::new(clients.s3.clone(), BUCKET);
        let (queue_url, dlq_url) = queue_init(&storage, &clients, &settings).await;
        // Versioned, as deploy/cloudformation.yaml makes it: an overwrite
        // of a recorded rendition would show as a second version.
        clients
            .s3
            .put_bucket_versioning()
            .bucket(BUCKET)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("versioning on");
        let mut queue = Queue::new(clients.sqs.clone(), &queue_url);
        queue.inspect().await.expect("inspect the queue");
        Stack {
            pg,
            moto,
            database_url,
            clients,
            db,
            storage,
            queue,
            queue_url,
            dlq_url,
            work_dir: tempfile::tempdir().expect("work dir"),
            visibility_timeout,
        }
    }

    /// Fast settings for tests: short polls and backoffs, a fast preset.
    pub fn settings(&self, concurrency: usize) -> WorkerSettings {
        WorkerSettings {
            worker_id: format!("test-{}", Uuid::new_v4().simple()),
            concurrency,
            visibility_timeout: self.visibility_timeout,
            receive_wait: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            outage_patience: Duration::from_secs(60),
            temp_dir: self.work_dir.path().to_owned(),
            unknown_video_patience: Duration::from_secs(3),
            spec: RenditionSpec {
                preset: "veryfast".into(),
                threads: 1,
                ..RenditionSpec::default()
            },
            isolation: isolation(),
            ..WorkerSettings::default()
        }
    }

    /// A worker over this stack, started (checks passed).
    pub async fn worker(&self, settings: WorkerSettings) -> Runner {
        Runner::new(
            settings,
            self.db.clone(),
            self.storage.clone(),
            Queue::new(self.clients.sqs.clone(), &self.queue_url),
        )
        .start()
        .await
        .expect("worker starts")
    }

    /// Runs an in-process worker in the background.
    pub async fn spawn_worker(&self, settings: WorkerSettings) -> RunningWorker {
        self.run(self.runner(settings, None, None).await).await
    }

    /// An in-process worker that reaches S3 and SQS through `aws` (e.g. an
    /// HTTP proxy) and PostgreSQL at `database_url` (e.g. a TCP proxy).
    pub async fn spawn_worker_via(
        &self,
        settings: WorkerSettings,
        aws: Option<&str>,
        database_url: Option<&str>,
    ) -> RunningWorker {
        let db = database_url.map(|url| Db::connect_lazy(url, 8).expect("pool"));
        self.run(self.runner(settings, aws, db).await).await
    }

    /// A worker (not started) over this stack's services, S3 and SQS
    /// reached through `aws` and PostgreSQL through `db` when given.
    pub async fn runner(&self, settings: WorkerSettings, aws: Option<&str>, db: Option<Db>) -> Runner {
        let clients = match aws {
            Some(endpoint) => Clients::with_credentials("us-east-1", endpoint, "test", "test").await,
            None => self.clients.clone(),
        };
        Runner::new(
            settings,
            db.unwrap_or_else(|| self.db.clone()),
            Storage::new(clients.s3.clone(), BUCKET),
            Queue::new(clients.sqs.clone(), &self.queue_url),
        )
    }

    /// Starts `runner` and runs it in the background.
    pub async fn run(&self, runner: Runner) -> RunningWorker {
        let worker = runner.start().await.expect("worker starts");
        let stats = worker.stats();
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        RunningWorker {
            shutdown,
            handle,
            stats,
        }
    }

    /// A pool on this stack's database whose calls each give up after
    /// `timeout` (the server may still commit after that: a lost reply).
    pub fn db_with_call_timeout(&self, timeout: Duration) -> Db {
        Db::connect_lazy(&self.database_url, 8)
            .expect("pool")
            .with_call_timeout(timeout)
    }

    /// Makes PostgreSQL take `seconds` over the first write that moves a
    /// video's row from status `from` to `to` (a trigger that sleeps once
    /// per video and transition): the commit then lands after a short client
    /// deadline, and the reply is lost.
    pub fn slow_first_write(&self, from: Status, to: Status, seconds: f64) {
        self.sql(&format!(
            "CREATE TABLE IF NOT EXISTS slowed (id uuid, transition text);
             CREATE OR REPLACE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$
             DECLARE t text := OLD.status || '>' || NEW.status;
             BEGIN
                 IF t = TG_ARGV[0] AND NOT EXISTS (SELECT 1 FROM slowed s WHERE s.id = NEW.id AND s.transition = t) THEN
                     INSERT INTO slowed VALUES (NEW.id, t);
                     PERFORM pg_sleep(TG_ARGV[1]::float8);
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER slow_{from}_{to} BEFORE UPDATE ON videos FOR EACH ROW
                 EXECUTE FUNCTION slow_once('{from}>{to}', '{seconds}');"
        ));
    }

    /// An SNS topic with an SQS queue subscribed to it (raw delivery), as
    /// the platform would subscribe: (topic ARN, the subscriber's queue URL).
    pub async fn subscribed_topic(&self) -> (String, String) {
        let topic = self
            .clients
            .sns
            .create_topic()
            .name(format!("events-{}", Uuid::new_v4().simple()))
            .send()
            .await
            .expect("topic")
            .topic_arn()
            .expect("arn")
            .to_owned();
        let queue = self
            .clients
            .sqs
            .create_queue()
            .queue_name(format!("subscriber-{}", Uuid::new_v4().simple()))
            .send()
            .await
            .expect("subscriber queue")
            .queue_url()
            .expect("url")
            .to_owned();
        let arn = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue arn")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("arn");
        self.clients
            .sns
            .subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(arn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .expect("subscribe");
        (topic, queue)
    }

    /// Every event the subscriber's queue received within `wait`, as JSON
    /// (received and deleted, as a consumer does).
    pub async fn events(&self, queue_url: &str, wait: Duration) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let start = std::time::Instant::now();
        while start.elapsed() < wait {
            let received = self
                .clients
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive events");
            for m in received.messages() {
                out.push(serde_json::from_str(m.body().expect("a body")).expect("an event is JSON"));
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle().expect("a handle"))
                    .send()
                    .await
                    .expect("delete event");
            }
        }
        out
    }

    /// What the platform's API does for an upload: the original under
    /// `originals/`, a pending row, a job message.
    pub async fn submit(&self, name: &str) -> Uuid {
        self.submit_file(&fixture(name)).await
    }

    /// [`Stack::submit`] of an upload made of `bytes` (a hostile file made
    /// on the spot).
    pub async fn submit_bytes(&self, bytes: &[u8]) -> Uuid {
        let path = self
            .work_dir
            .path()
            .join(format!("upload-{}.bin", Uuid::new_v4().simple()));
        std::fs::write(&path, bytes).expect("write the upload");
        self.submit_file(&path).await
    }

    async fn submit_file(&self, file: &Path) -> Uuid {
        let id = Uuid::new_v4();
        let ext = file
            .extension()
            .map_or("bin".into(), |e| e.to_string_lossy().to_lowercase());
        let key = format!("originals/{id}.{ext}");
        self.storage
            .upload(file, &key, "application/octet-stream")
            .await
            .expect("upload the original");
        self.db.insert_pending(id, &key).await.expect("insert the row");
        self.send_raw(&format!(r#"{{"video_id":"{id}"}}"#)).await;
        id
    }

    /// A pending row and its original, but no message: what a lost
    /// message, or a platform that never sent one, leaves.
    pub async fn row_without_message(&self, fixture_name: &str) -> Uuid {
        let id = Uuid::new_v4();
        let key = format!("originals/{id}.mp4");
        self.storage
            .upload(&fixture(fixture_name), &key, "video/mp4")
            .await
            .expect("upload");
        self.db.insert_pending(id, &key).await.expect("row");
        id
    }

    pub async fn row(&self, id: Uuid) -> VideoRow {
        self.db.get(id).await.expect("query").expect("row exists")
    }

    /// Polls until every id is processed or failed; panics after `limit`.
    pub async fn wait_settled(&self, ids: &[Uuid], limit: Duration) -> Vec<VideoRow> {
        self.wait_for(limit, "every video processed or failed", || async {
            let mut rows = Vec::new();
            for id in ids {
                let row = self.row(*id).await;
                if !row.status.is_final() {
                    return None;
                }
                rows.push(row);
            }
            Some(rows)
        })
        .await
    }

    /// Polls `check` every 200 ms until it returns something.
    pub async fn wait_for<T, F, Fut>(&self, limit: Duration, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        testkit::wait::until(limit, what, check).await
    }

    /// Polls until the video's row has `status`.
    pub async fn wait_status(&self, id: Uuid, status: Status, limit: Duration) {
        self.wait_for(limit, &format!("video {id} {status}"), || async {
            (self.row(id).await.status == status).then_some(())
        })
        .await;
    }

    /// Runs `sql` with the real `psql` client in the stack's database
    /// (what an operator, or the platform's own code, sees); returns its
    /// unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql(DATABASE, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An HTTP proxy in front of moto, for faults in chosen S3/SQS calls.
    pub fn http_proxy(&self) -> testkit::HttpProxy {
        testkit::HttpProxy::start(&self.moto.endpoint()).expect("HTTP proxy starts")
    }

    /// (visible, in flight, delayed) messages in a queue.
    pub async fn depth_of(&self, url: &str) -> (u64, u64, u64) {
        let out = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("queue attributes");
        let attrs = out.attributes().cloned().unwrap_or_default();
        let get = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        )
    }

    /// Messages in the job queue, visible or not.
    pub async fn queue_total(&self) -> u64 {
        let (a, b, c) = self.depth_of(&self.queue_url).await;
        a + b + c
    }

    /// Multipart uploads started in the bucket and neither completed nor
    /// aborted.
    pub async fn open_uploads(&self) -> usize {
        let listed = self
            .clients
            .s3
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .expect("list multipart uploads");
        listed.uploads().len()
    }

    /// Receives everything in the dead-letter queue: (body, attributes).
    pub async fn dead_letters(&self) -> Vec<(String, HashMap<String, String>)> {
        let out = self
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            // A look only: the messages stay visible.
            .visibility_timeout(0)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive from DLQ");
        out.messages()
            .iter()
            .map(|m| {
                let attrs = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                (m.body().unwrap_or_default().to_owned(), attrs)
            })
            .collect()
    }

    /// A reconciler over this stack, acting at once on anything it finds.
    pub fn reconciler(&self, stranded_after: Duration, abandoned_after: Duration) -> Reconciler {
        Reconciler::new(
            self.db.clone(),
            self.queue.clone(),
            ReconcileSettings {
                interval: Duration::from_secs(1),
                stranded_after,
                max_resends: 3,
                abandoned_after,
                max_attempts: 3,
                publish_after: Duration::ZERO,
                holder: format!("test-reconciler-{}", Uuid::new_v4().simple()),
            },
            Arc::new(Stats::default()),
        )
    }

    /// What every test ends with, whatever it did: each video processed,
    /// or failed with a reason (never pending or processing); the recorded
    /// rendition exists, was written once (one version in the versioned
    /// bucket) and is the only one under the video's prefix; no message
    /// left in the job queue; no dead letter of a processed or pending
    /// video; no job directory and no unfinished multipart upload.
    pub async fn check_invariants(&self, ids: &[Uuid]) {
        let s3 = &self.clients.s3;
        for id in ids {
            let row = self.row(*id).await;
            match row.status {
                Status::Processed => {
                    let key = row.processed_key.clone().expect("a processed row has its key");
                    let versions = s3
                        .list_object_versions()
                        .bucket(BUCKET)
                        .prefix(format!("processed/{id}/"))
                        .send()
                        .await
                        .expect("list versions");
                    let written: Vec<&str> = versions.versions().iter().filter_map(|v| v.key()).collect();
                    let recorded: Vec<String> = [Some(key), row.poster_key.clone()].into_iter().flatten().collect();
                    for key in &recorded {
                        assert_eq!(
                            written.iter().filter(|k| **k == key).count(),
                            1,
                            "the recorded object {key} was written exactly once: {written:?}"
                        );
                    }
                    let current = self.storage.list(&format!("processed/{id}/")).await.expect("list");
                    for key in &recorded {
                        assert!(current.contains(key), "{key} is recorded but gone: {current:?}");
                    }
                    let rendition = row.processed_key.as_deref().unwrap_or_default();
                    let stray: Vec<&String> = current
                        .iter()
                        .filter(|k| !recorded.contains(k) && !worker::outputs::belongs_to(k, rendition))
                        .collect();
                    assert!(stray.is_empty(), "only the recorded outputs remain, not {stray:?}");
                    let outputs = row.outputs.clone().expect("a processed row records its outputs");
                    assert_eq!(outputs["objects"], current.len(), "every output recorded: {current:?}");
                    assert_eq!((row.phase, row.progress_percent), (Phase::Done, 100), "{row:?}");
                    assert!(row.event_id.is_some(), "an outcome without an event id: {row:?}");
                }
                Status::Failed => {
                    assert!(
                        row.error.is_some() && row.failure_kind.is_some(),
                        "failed without a reason: {row:?}"
                    );
                    assert_eq!(row.phase, Phase::Failed, "{row:?}");
                    assert!(row.event_id.is_some(), "an outcome without an event id: {row:?}");
                }
                Status::Pending | Status::Processing => panic!("video {id} ended {}: {row:?}", row.status),
            }
        }
        assert_eq!(self.queue_total().await, 0, "messages left in the job queue");
        for (body, _) in self.dead_letters().await {
            let Ok(worker::message::JobMessage { video_id: id, .. }) = worker::message::parse(&body) else {
                continue;
            };
            if let Some(row) = self.db.get(id).await.expect("query") {
                assert!(
                    row.status == Status::Failed,
                    "a dead letter for a {} video: {body}",
                    row.status
                );
            }
        }
        assert!(self.leftover_job_dirs().is_empty(), "{:?}", self.leftover_job_dirs());
        let uploads = s3
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .expect("list uploads");
        assert!(
            uploads.uploads().is_empty(),
            "unfinished multipart uploads: {:?}",
            uploads.uploads()
        );
    }

    /// Sends a raw message body to the job queue.
    pub async fn send_raw(&self, body: &str) {
        self.queue.send(body).await.expect("send");
    }

    /// Downloads an object and probes it as a viewer's player would see it.
    pub async fn fetch_rendition(&self, key: &str) -> processor::MediaInfo {
        let path = self.work_dir.path().join(format!("fetched-{}.mp4", Uuid::new_v4()));
        self.storage
            .download(key, &path, 1 << 30)
            .await
            .expect("rendition is in S3");
        let info = processor::probe(&path).expect("rendition probes");
        std::fs::remove_file(&path).expect("remove");
        info
    }

    /// A presigned GET URL of the object at `key` on moto's S3, as the
    /// platform hands to a viewer's browser (ranges work on it).
    pub async fn presigned_url(&self, key: &str) -> String {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600)).expect("a config");
        self.clients
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .presigned(config)
            .await
            .expect("presigned")
            .uri()
            .to_owned()
    }

    /// The width and height of the JPEG at `key`, read from its frame
    /// header (the processor's probe opens videos only).
    pub async fn fetch_jpeg_size(&self, key: &str) -> (u32, u32) {
        let path = self.work_dir.path().join(format!("fetched-{}.jpg", Uuid::new_v4()));
        self.storage
            .download(key, &path, 1 << 30)
            .await
            .expect("poster is in S3");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(bytes.get(..2), Some(&[0xFF, 0xD8][..]), "{key} is not a JPEG");
        let mut at = 2;
        while at + 9 < bytes.len() {
            assert_eq!(bytes[at], 0xFF, "{key}: a JPEG segment");
            let marker = bytes[at + 1];
            let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
            // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
            if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
                let h = u16::from_be_bytes([bytes[at + 5], bytes[at + 6]]);
                let w = u16::from_be_bytes([bytes[at + 7], bytes[at + 8]]);
                return (w.into(), h.into());
            }
            at += 2 + len;
        }
        panic!("{key}: no JPEG frame header");
    }

    /// Job directories still present under the work dir (each worker
    /// process keeps its jobs in `vidworker-<pid>-…/job-…`).
    pub fn leftover_job_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for worker in std::fs::read_dir(self.work_dir.path())
            .expect("read work dir")
            .flatten()
        {
            if !worker.file_name().to_string_lossy().starts_with("vidworker-") {
                continue;
            }
            for job in std::fs::read_dir(worker.path()).into_iter().flatten().flatten() {
                if job.file_name().to_string_lossy().starts_with("job-") {
                    dirs.push(job.path());
                }
            }
        }
        dirs
    }
}

pub struct RunningWorker {
    pub shutdown: Shutdown,
    pub handle: tokio::task::JoinHandle<Arc<Stats>>,
    stats: Arc<Stats>,
}

impl RunningWorker {
    /// The worker's counters while it runs.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Stops intake, lets jobs finish, returns the counters.
    pub async fn stop(self) -> Arc<Stats> {
        self.shutdown.stop_intake();
        self.handle.await.expect("worker task")
    }
}

/// The events of one video.
pub fn of_video(events: &[serde_json::Value], id: Uuid) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|e| e["video_id"] == serde_json::Value::String(id.to_string()))
        .collect()
}

/// How the workers of these tests run transcodes: in-process in the worker
/// library's own tests (there is no binary to start), in sandboxed children
/// of the real binary where these helpers are compiled into the binary's
/// tests, exactly as `vidworker run` does.
pub fn isolation() -> worker::isolate::Isolation {
    match option_env!("CARGO_BIN_EXE_vidworker") {
        Some(program) => worker::isolate::Isolation::Child(worker::isolate::ChildSettings {
            program: program.into(),
            args: vec!["transcode-job".into()],
            memory: Some(worker::config::DEFAULT_MEMORY_PER_JOB),
            require_sandbox: false,
        }),
        None => worker::isolate::Isolation::InProcess,
    }
}

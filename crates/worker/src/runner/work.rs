//! The work of a claimed job: download the original, transcode it, upload
//! the rendition, its poster and its extras (the ladder, HLS, the
//! storyboard) under the claim's own keys ([`crate::outputs`]), in a
//! private directory that is removed whatever happens.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use processor::{CancelFlag, Progress, Report};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::progress::RowProgress;
use super::stop::JobStop;
use super::{JobError, Runner};
use crate::db::Phase;
use crate::isolate::protocol::Job;
use crate::isolate::sandbox::Usage;
use crate::isolate::{ChildError, Isolation};
use crate::outputs::{Cost, Outputs, Plan, StageSeconds, seconds};
use crate::telemetry::Stage;

/// What a finished transcode left to record.
#[derive(Debug)]
pub(super) struct Produced {
    pub(super) report: Report,
    pub(super) original_bytes: u64,
    /// The claim's own rendition key.
    pub(super) key: String,
    /// The claim's own poster key, if the spec makes one.
    pub(super) poster_key: Option<String>,
    /// Every key stored, the two above included.
    pub(super) keys: Vec<String>,
    /// Every output, as the row records them.
    pub(super) outputs: Outputs,
    /// What the job cost.
    pub(super) cost: Cost,
}

/// What the work of one job needs from it.
pub(super) struct Work<'a> {
    pub(super) runner: &'a Arc<Runner>,
    pub(super) stop: &'a JobStop,
    /// Cancelled when the worker stops taking jobs: a job still waiting
    /// for a transcode slot is then handed back.
    pub(super) intake: &'a CancellationToken,
    pub(super) progress: &'a Arc<RowProgress>,
}

impl Work<'_> {
    /// Download, transcode and upload, in a private directory that is
    /// removed whatever happens.
    pub(super) async fn run(
        &self,
        video_id: Uuid,
        original_key: &str,
        token: Uuid,
        jobs_dir: Option<&Path>,
    ) -> Result<Produced, JobError> {
        let runner = self.runner;
        let prefix = &runner.settings.originals_prefix;
        if !original_key.starts_with(prefix.as_str()) || original_key.contains("..") {
            return Err(JobError::ForeignKey {
                key: original_key.to_owned(),
                prefix: prefix.clone(),
            });
        }
        let jobs_dir =
            jobs_dir.ok_or_else(|| JobError::WorkDir(std::io::Error::other("the worker has no working directory")))?;
        // Mode 0700: other users of the machine cannot read uploads or
        // renditions (tempfile's default would follow the umask).
        let dir = tempfile::Builder::new()
            .prefix("job-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(jobs_dir)
            .map_err(JobError::WorkDir)?;
        let original = dir.path().join("original");
        let rendition = dir.path().join("rendition.mp4");
        let stats = &runner.stats;
        // A slot free now is taken before the download; otherwise this job
        // is a prefetch, which downloads first if the disk has room.
        let mut slot = Arc::clone(&runner.transcoders).try_acquire_owned().ok();
        if slot.is_none() && !self.room_to_prefetch(jobs_dir) {
            slot = Some(self.transcode_slot().await?);
        }
        let started = Instant::now();
        let original_bytes = stats
            .observe_stage(Stage::Download, self.download(original_key, &original))
            .await?;
        stats.downloaded(original_bytes);
        self.progress.set(Phase::Downloading, 10);
        let slot = match slot {
            Some(slot) => slot,
            None => self.transcode_slot().await?,
        };
        let downloaded = Instant::now();
        let (report, usage) = stats
            .observe_stage(Stage::Transcode, self.transcode(original_key, &original, &rendition))
            .await?;
        let transcoded = Instant::now();
        // The upload does not hold up the next job's transcode.
        drop(slot);
        let stem = format!("{}{video_id}/{}", runner.settings.processed_prefix, token.simple());
        let plan =
            Plan::new(&report, &rendition, &stem).map_err(|e| JobError::Child(ChildError::Protocol(e.to_string())))?;
        self.store(&plan, video_id, token).await?;
        drop(dir);
        let wall = StageSeconds {
            download: seconds(downloaded - started),
            transcode: seconds(transcoded - downloaded),
            upload: seconds(transcoded.elapsed()),
        };
        let cost = Cost::new(
            usage.map(|u| u.cpu_seconds),
            usage.and_then(|u| u.peak_rss_bytes),
            wall,
            runner.settings.vcpu_hour_price,
        );
        Ok(Produced {
            report,
            original_bytes,
            keys: plan.uploads.into_iter().map(|u| u.key).collect(),
            key: plan.key,
            poster_key: plan.poster_key,
            outputs: plan.outputs,
            cost,
        })
    }

    /// Uploads every file of the plan under the claim's own keys (the
    /// primary rendition last) and notes the upload in the row; what cannot
    /// be noted (the claim is lost) is deleted again.
    async fn store(&self, plan: &Plan, video_id: Uuid, token: Uuid) -> Result<(), JobError> {
        let runner = self.runner;
        let stats = &runner.stats;
        self.progress.set(Phase::Uploading, 90);
        // One upload stage. A file that cannot be stored takes the ones
        // stored before it with it: half a set is never recorded. One at a
        // time: a ladder is a few dozen small objects, and a job's upload
        // is short beside its transcode.
        let uploads = async {
            for (i, upload) in plan.uploads.iter().enumerate() {
                if let Err(e) = self.upload(&upload.path, &upload.key, upload.content_type).await {
                    for stored in &plan.uploads[..i] {
                        delete_unrecorded(runner, &stored.key).await;
                    }
                    return Err(e);
                }
            }
            Ok(())
        };
        stats.observe_stage(Stage::Upload, uploads).await?;
        stats.uploaded(plan.outputs.bytes);
        self.progress.set(Phase::Uploading, 97);
        // A stop request now (the end of the grace period) still lets the
        // record land if PostgreSQL answers at once: it takes milliseconds,
        // while handing the job back would redo it.
        let record = runner.patiently("record the upload", self.stop, || async {
            Ok(runner.db.record_upload(video_id, token, &plan.key).await?)
        });
        match self.stop.bound("record the upload", record).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                // The claim is lost: no row records keys under its token.
                for upload in &plan.uploads {
                    delete_unrecorded(runner, &upload.key).await;
                }
                Err(JobError::ClaimLost)
            }
            // The write may have landed unseen, so the objects stay; the
            // video's next recording clears what its row does not keep.
            Err(e) => Err(e),
        }
    }

    /// Waits for a transcode slot. A job still waiting when intake stops
    /// (SIGTERM, a termination notice) is handed back rather than started.
    async fn transcode_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, JobError> {
        tokio::select! {
            biased;
            p = Arc::clone(&self.runner.transcoders).acquire_owned() => p.map_err(|_| JobError::Shutdown),
            () = self.intake.cancelled() => Err(JobError::Shutdown),
            () = self.stop.token.cancelled() => Err(self.stop.cut_short()),
        }
    }

    /// Whether the jobs' disk can take a prefetched original: room for the
    /// largest original accepted (`INPUT_MAX_BYTES`) twice over, since the
    /// running job's original and rendition are still there and grow.
    fn room_to_prefetch(&self, jobs_dir: &Path) -> bool {
        let need = self.runner.settings.spec.limits.max_input_bytes.saturating_mul(2);
        match rustix::fs::statvfs(jobs_dir) {
            Ok(fs) => fs.f_bavail.saturating_mul(fs.f_frsize) >= need,
            Err(_) => false,
        }
    }

    async fn download(&self, key: &str, to: &Path) -> Result<u64, JobError> {
        let runner = self.runner;
        let limit = runner.settings.spec.limits.max_input_bytes;
        let download = runner.patiently("download the original", self.stop, || async {
            Ok(runner.storage.download(key, to, limit).await?)
        });
        let bytes = tokio::select! {
            r = download => r?,
            () = self.stop.token.cancelled() => return Err(self.stop.cut_short()),
        };
        tracing::debug!(bytes, "original downloaded");
        Ok(bytes)
    }

    /// Runs the processor as the worker's isolation says: in a sandboxed
    /// child, killed when the job's stop token is cancelled, or on a
    /// blocking thread, cancelled within a frame.
    /// What the child used is returned with its report (`None` in
    /// process).
    async fn transcode(&self, key: &str, input: &Path, output: &Path) -> Result<(Report, Option<Usage>), JobError> {
        let original = format!("s3://{}/{key}", self.runner.storage.bucket());
        let on_progress = report_progress(Arc::clone(self.progress));
        let child = match &self.runner.settings.isolation {
            Isolation::Child(child) => child,
            Isolation::InProcess => {
                let report = self.in_process(original, input, output, on_progress).await?;
                return Ok((report, None));
            }
        };
        let job = Job {
            input: input.to_owned(),
            output: output.to_owned(),
            name: original,
            spec: self.runner.settings.spec.clone(),
        };
        let job_dir = input.parent().unwrap_or(input);
        let (report, usage) = child.transcode(job, job_dir, on_progress, &self.stop.token).await?;
        Ok((report, Some(usage)))
    }

    /// The transcode on a blocking thread of this process.
    async fn in_process(
        &self,
        original: String,
        input: &Path,
        output: &Path,
        on_progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<Report, JobError> {
        let flag = CancelFlag::new();
        let watcher = {
            let (flag, token) = (flag.clone(), self.stop.token.clone());
            tokio::spawn(async move {
                token.cancelled().await;
                flag.cancel();
            })
        };
        let spec = self.runner.settings.spec.clone();
        let (input, output) = (input.to_owned(), output.to_owned());
        let transcode =
            tokio::task::spawn_blocking(move || processor::process(&input, &output, &spec, on_progress, &flag))
                .in_current_span()
                .await;
        watcher.abort();
        match transcode {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(source)) => Err(JobError::Processor { original, source }),
            Err(join) => Err(JobError::Crashed(join.to_string())),
        }
    }

    /// Uploads a file of the rendition to the claim's own key: a worker
    /// whose claim is lost can only write an object that is never recorded.
    async fn upload(&self, file: &Path, key: &str, content_type: &str) -> Result<(), JobError> {
        let runner = self.runner;
        let upload = runner.patiently("upload the rendition", self.stop, || async {
            Ok(runner.storage.upload(file, key, content_type).await?)
        });
        let uploaded = tokio::select! {
            r = upload => r,
            () = self.stop.token.cancelled() => Err(self.stop.cut_short()),
        };
        if uploaded.is_err() {
            // A single PUT may have landed before the failure was seen.
            delete_unrecorded(runner, key).await;
        }
        uploaded
    }
}

/// The progress callback of a transcode: the row's progress, and a debug
/// line every quarter.
fn report_progress(progress: Arc<RowProgress>) -> impl FnMut(Progress) + Send + 'static {
    let mut next = 0.25;
    move |p: Progress| {
        progress.transcoding(p.fraction());
        if p.fraction() >= next {
            tracing::debug!(
                percent = (p.fraction() * 100.0).round(),
                frames = p.frames,
                "transcoding"
            );
            next += 0.25;
        }
    }
}

/// Deletes an object of this job that no row records. Best effort: what
/// stays costs storage, never correctness.
pub(super) async fn delete_unrecorded(runner: &Runner, key: &str) {
    match runner.storage.delete(key).await {
        Ok(()) => tracing::debug!(key, "removed a rendition that is not recorded"),
        Err(e) => tracing::warn!(key, error = %e, "cannot remove a rendition that is not recorded"),
    }
}

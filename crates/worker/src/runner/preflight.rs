//! `vidworker check`: every start-up check of [`Runner::start`], run to the
//! end instead of stopping at the first problem, plus the writes a job will
//! make, tried without leaving anything behind. One finding per subject.

use super::{HANDBACK_RECEIVES, Runner};

/// What one check found.
#[derive(Debug)]
pub struct Finding {
    /// What was checked ("database", "queue", ...).
    pub subject: &'static str,
    /// What was found: fine (`Ok`) or a problem (`Err`), in one line.
    pub outcome: Result<String, String>,
}

impl Finding {
    fn new(subject: &'static str, outcome: Result<String, String>) -> Self {
        Finding { subject, outcome }
    }
}

impl Runner {
    /// Checks everything a worker needs (settings, sandbox, database and
    /// its schema, queue and redrive policy, bucket reads and writes,
    /// events target) without taking a job; every check runs.
    pub async fn preflight(&mut self) -> Vec<Finding> {
        let mut found = Vec::new();
        let spec = processor::check_spec(&self.settings.spec)
            .map(|()| {
                let s = &self.settings.spec;
                format!("{}x{}, preset {}, CRF {}", s.width, s.height, s.preset, s.crf)
            })
            .map_err(|e| e.to_string());
        found.push(Finding::new("rendition", spec));
        let isolation = self.check_isolation().await.map_err(|e| e.to_string());
        found.push(Finding::new("transcodes", isolation));
        found.push(Finding::new("work directory", self.check_temp_dir()));
        found.push(Finding::new("database", self.check_database().await));
        found.push(Finding::new("queue", self.check_queue().await));
        found.push(Finding::new("bucket", self.check_bucket().await));
        if self.publisher.is_enabled() {
            found.push(Finding::new("events", self.publisher.check().await));
        }
        found
    }

    /// The settings that shape the work, in one line.
    pub fn settings_summary(&self) -> String {
        let s = &self.settings;
        format!(
            "worker {}, {} job(s) at once, {} thread(s) each, visibility timeout {} s, {} attempt(s)",
            s.worker_id,
            s.concurrency,
            s.spec.threads,
            s.visibility_timeout.as_secs(),
            s.max_attempts
        )
    }

    fn check_temp_dir(&self) -> Result<String, String> {
        let dir = &self.settings.temp_dir;
        tempfile::tempfile_in(dir).map_err(|e| format!("{}: cannot write there: {e}", dir.display()))?;
        let free = rustix::fs::statvfs(dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(format!("{}: writable, {} MiB free", dir.display(), free >> 20))
    }

    async fn check_database(&self) -> Result<String, String> {
        self.db.check().await.map_err(|e| e.to_string())?;
        self.db.check_schema().await.map_err(|e| e.to_string())?;
        let tls = match crate::db::tls_of(self.db.label()) {
            crate::db::Tls::Verified => "TLS verified".to_owned(),
            crate::db::Tls::Local => "on this machine".to_owned(),
            crate::db::Tls::Unverified { sslmode } => format!("TLS not verified (sslmode={sslmode})"),
        };
        Ok(format!(
            "{}: reachable, {tls}, every migration of this release applied",
            self.db.label()
        ))
    }

    async fn check_queue(&mut self) -> Result<String, String> {
        let info = self.queue.inspect().await.map_err(|e| e.to_string())?;
        self.check_redrive_policy(info.max_receive_count)
            .map_err(|e| e.to_string())?;
        let depth = self.queue.depth().await.map_err(|e| e.to_string())?;
        let policy = match (info.max_receive_count, self.queue.dead_letter_url()) {
            (Some(n), Some(dlq)) if n >= self.settings.max_attempts + HANDBACK_RECEIVES => {
                format!("dead-letter queue {dlq} after {n} receives")
            }
            (Some(n), Some(dlq)) => {
                return Err(format!(
                    "{}: maxReceiveCount {n} leaves no room above MAX_ATTEMPTS {} for hand-backs \
                     (at least {}), dead-letter queue {dlq}",
                    self.queue.url(),
                    self.settings.max_attempts,
                    self.settings.max_attempts + HANDBACK_RECEIVES
                ));
            }
            _ => return Err(format!("{}: no dead-letter queue (redrive policy)", self.queue.url())),
        };
        Ok(format!("{}: {depth} message(s) waiting, {policy}", self.queue.url()))
    }

    async fn check_bucket(&self) -> Result<String, String> {
        let (originals, processed) = (&self.settings.originals_prefix, &self.settings.processed_prefix);
        let bucket = self.storage.bucket();
        for prefix in [originals, processed] {
            self.storage
                .check(prefix)
                .await
                .map_err(|e| format!("listing {prefix}: {e}"))?;
        }
        self.storage
            .check_write(processed)
            .await
            .map_err(|e| format!("writing {processed}: {e}"))?;
        Ok(format!(
            "s3://{bucket}: {originals} and {processed} listed, an upload to {processed} started and aborted"
        ))
    }
}

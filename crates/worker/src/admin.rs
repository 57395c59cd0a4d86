//! What the platform around the worker does, for trying the whole flow
//! against emulators: create the bucket and queues (`queue-init`), accept an
//! upload (`submit`), and look at the rows (`status`).

use std::path::Path;

use uuid::Uuid;

use crate::db::{Db, DbError, VideoRow};
use crate::queue::{Queue, QueueError, QueueSettings};
use crate::storage::{Storage, StorageError};

/// A failure of an admin command, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// S3 failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// SQS failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A file to submit is unusable.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// What `queue-init` made.
#[derive(Debug)]
pub struct Initialised {
    /// The job queue's URL.
    pub queue_url: String,
    /// The dead-letter queue's URL.
    pub dead_letter_url: String,
}

/// Creates the bucket, the queue and its dead-letter queue with the
/// production settings; brings existing ones to those settings.
pub async fn queue_init(
    storage: &Storage,
    sqs: &aws_sdk_sqs::Client,
    queue_name: &str,
    region: Option<&str>,
    settings: &QueueSettings,
) -> Result<Initialised, AdminError> {
    storage.create_bucket(region).await?;
    let (queue_url, dead_letter_url) = Queue::create(sqs, queue_name, settings).await?;
    Ok(Initialised {
        queue_url,
        dead_letter_url,
    })
}

/// Does what the platform's API does with an upload: store the original at
/// `<prefix><new uuid>.<ext>`, insert a pending row, send the job message.
pub async fn submit(
    file: &Path,
    storage: &Storage,
    db: &Db,
    queue: &Queue,
    originals_prefix: &str,
) -> Result<Uuid, AdminError> {
    let meta = std::fs::metadata(file).map_err(|e| AdminError::File {
        path: file.to_owned(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(AdminError::File {
            path: file.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    let id = Uuid::new_v4();
    // Only a plain alphanumeric extension survives into the key.
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "bin".into());
    let key = format!("{originals_prefix}{id}.{ext}");
    storage.upload(file, &key, "application/octet-stream").await?;
    db.insert_pending(id, &key).await?;
    queue.send(&serde_json::json!({ "video_id": id }).to_string()).await?;
    Ok(id)
}

/// The rows as a table, newest first.
pub fn table(rows: &[VideoRow]) -> String {
    let mut out = format!(
        "{:<36}  {:<10}  {:>3}  {:>8}  {:>9}  {:>9}  {:<19}  {}\n",
        "id", "status", "try", "length", "original", "rendition", "updated (UTC)", "error"
    );
    for r in rows {
        let length = r
            .processed_duration_seconds
            .map_or_else(|| "-".to_owned(), |d| format!("{d:.1} s"));
        let bytes = |b: Option<i64>| b.map_or_else(|| "-".to_owned(), |b| crate::local::human_bytes(b.max(0) as u64));
        let error = r.error.as_deref().unwrap_or("").replace('\n', " ");
        let error: String = error.chars().take(80).collect();
        out.push_str(&format!(
            "{:<36}  {:<10}  {:>3}  {:>8}  {:>9}  {:>9}  {:<19}  {}\n",
            r.id,
            r.status,
            r.attempts,
            length,
            bytes(r.original_bytes),
            bytes(r.processed_bytes),
            r.updated_at.format("%Y-%m-%d %H:%M:%S"),
            error
        ));
    }
    out
}

/// One row in full.
pub fn details(r: &VideoRow) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| opt(t.map(|t| t.to_rfc3339()));
    let rows = [
        ("id", r.id.to_string()),
        ("status", r.status.clone()),
        ("original", r.original_key.clone()),
        ("rendition", opt(r.processed_key.clone())),
        ("attempts", r.attempts.to_string()),
        ("error", opt(r.error.clone())),
        ("created", r.created_at.to_rfc3339()),
        ("updated", r.updated_at.to_rfc3339()),
        ("started", time(r.processing_started_at)),
        ("processed", time(r.processed_at)),
        ("claimed by", opt(r.claimed_by.clone())),
        ("lease until", time(r.lease_expires_at)),
        (
            "source",
            match (r.source_width, r.source_height, r.source_duration_seconds) {
                (Some(w), Some(h), d) => format!("{w}x{h}, {}", d.map_or("? s".into(), |d| format!("{d:.2} s"))),
                _ => "-".into(),
            },
        ),
        ("original size", opt(r.original_bytes.map(|b| b.to_string()))),
        ("rendition size", opt(r.processed_bytes.map(|b| b.to_string()))),
        (
            "rendition length",
            opt(r.processed_duration_seconds.map(|d| format!("{d:.2} s"))),
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:>16}: {v}\n")).collect()
}

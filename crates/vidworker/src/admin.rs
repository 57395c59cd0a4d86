//! The operator's commands around the worker: apply the migrations
//! (`migrate`), create the bucket and queues (`queue-init`), do what the
//! platform's API does with an upload (`submit`), and look at the rows
//! (`status`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use uuid::Uuid;
use worker::aws::Clients;
use worker::db::{Db, Phase, VideoRow};
use worker::outputs::{Cost, Outputs};
use worker::queue::{Queue, QueueSettings, queue_name};
use worker::storage::Storage;

use crate::flags::{AwsArgs, DbArgs};
use crate::local::{human_bytes, print};

/// `vidworker migrate`.
pub async fn migrate(args: &DbArgs) -> anyhow::Result<ExitCode> {
    let pool = args.connect(1, None).await?;
    let label = pool.label().to_owned();
    pool.migrate().await.with_context(|| format!("migrating {label}"))?;
    eprintln!("migrations applied to {label}");
    Ok(ExitCode::SUCCESS)
}

/// `vidworker queue-init`: the production settings, with the queue's
/// receive limit and visibility timeout as given.
pub async fn queue_init(aws: &AwsArgs, max_receive_count: u32, visibility_timeout: u64) -> anyhow::Result<ExitCode> {
    let clients = aws.clients().await;
    let settings = QueueSettings {
        max_receive_count,
        visibility_timeout: Duration::from_secs(visibility_timeout),
        ..QueueSettings::default()
    };
    let storage = Storage::new(clients.s3.clone(), &aws.bucket);
    let made = create_queues(&storage, &clients, queue_name(&aws.queue_url), &settings).await?;
    print(&format!(
        "bucket      s3://{}\nqueue       {}\ndead letter {}\n",
        aws.bucket, made.queue_url, made.dead_letter_url
    ));
    Ok(ExitCode::SUCCESS)
}

/// `vidworker submit`: each file as an upload; prints the ids.
pub async fn submit_files(
    files: &[PathBuf],
    db: &DbArgs,
    aws: &AwsArgs,
    originals_prefix: &str,
) -> anyhow::Result<ExitCode> {
    let clients = aws.clients().await;
    let storage = Storage::new(clients.s3.clone(), &aws.bucket);
    let queue = Queue::new(clients.sqs.clone(), &aws.queue_url);
    let pool = db.connect(2, Some(&clients)).await?;
    for file in files {
        let id = submit(file, &storage, &pool, &queue, originals_prefix).await?;
        print(&format!("{id}  {}\n", file.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `vidworker status [ID]`: one row in full, or the newest rows and the
/// count in each state.
pub async fn status(id: Option<Uuid>, limit: i64, db: &DbArgs) -> anyhow::Result<ExitCode> {
    let pool = db.connect(1, None).await?;
    match id {
        Some(id) => match pool.get(id).await? {
            Some(row) => print(&details(&row)),
            None => anyhow::bail!("no video {id}"),
        },
        None => {
            let counts = pool.counts().await?;
            print(&table(&pool.list(limit).await?));
            let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            print(&format!("\n{}\n", summary.join(", ")));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `queue-init` made.
#[derive(Debug)]
struct Initialised {
    /// The job queue's URL.
    queue_url: String,
    /// The dead-letter queue's URL.
    dead_letter_url: String,
}

/// Creates the bucket, the queue and its dead-letter queue with the
/// production settings; brings existing ones to those settings.
async fn create_queues(
    storage: &Storage,
    clients: &Clients,
    queue_name: &str,
    settings: &QueueSettings,
) -> anyhow::Result<Initialised> {
    storage.create_bucket(clients.region.as_deref()).await?;
    let (queue_url, dead_letter_url) = Queue::create(&clients.sqs, queue_name, settings).await?;
    Ok(Initialised {
        queue_url,
        dead_letter_url,
    })
}

/// Does what the platform's API does with an upload: store the original at
/// `<prefix><new uuid>.<ext>`, insert a pending row, send the job message.
async fn submit(
    file: &Path,
    storage: &Storage,
    db: &Db,
    queue: &Queue,
    originals_prefix: &str,
) -> anyhow::Result<Uuid> {
    let meta = std::fs::metadata(file).with_context(|| file.display().to_string())?;
    if !meta.is_file() {
        anyhow::bail!("{}: not a regular file", file.display());
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
    queue.send(&worker::message::body(id)).await?;
    Ok(id)
}

/// The rows as a table, newest first.
fn table(rows: &[VideoRow]) -> String {
    let mut out = format!(
        "{:<36}  {:<10}  {:<16}  {:>3}  {:>8}  {:>9}  {:>9}  {:<19}  {}\n",
        "id", "status", "phase", "try", "length", "original", "rendition", "updated (UTC)", "error"
    );
    for r in rows {
        let length = r
            .processed_duration_seconds
            .map_or_else(|| "-".to_owned(), |d| format!("{d:.1} s"));
        let bytes = |b: Option<i64>| b.map_or_else(|| "-".to_owned(), |b| human_bytes(b.max(0) as u64));
        let error = r.error.as_deref().unwrap_or("").replace('\n', " ");
        let error: String = error.chars().take(80).collect();
        out.push_str(&format!(
            "{:<36}  {:<10}  {:<16}  {:>3}  {:>8}  {:>9}  {:>9}  {:<19}  {}\n",
            r.id,
            r.status,
            phase(r),
            r.attempts,
            length,
            bytes(r.original_bytes),
            bytes(r.processed_bytes),
            listed_time(r.updated_at),
            error
        ));
    }
    out
}

/// `transcoding 42 %`, or just the phase when the percentage says
/// nothing (`queued`, `done`, `failed`).
fn phase(r: &VideoRow) -> String {
    match r.phase {
        Phase::Queued | Phase::Done | Phase::Failed => r.phase.to_string(),
        Phase::Downloading | Phase::Transcoding | Phase::Uploading | Phase::Recording => {
            format!("{} {} %", r.phase, r.progress_percent)
        }
    }
}

/// A time in the listing: `2026-12-06 13:00:00` (UTC).
fn listed_time(at: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    at.to_offset(time::UtcOffset::UTC).format(FORMAT).unwrap_or_default()
}

/// One row in full.
fn details(r: &VideoRow) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let time = |t: Option<time::OffsetDateTime>| opt(t.and_then(|t| t.format(rfc3339).ok()));
    let rows = [
        ("id", r.id.to_string()),
        ("status", r.status.to_string()),
        ("original", r.original_key.clone()),
        ("phase", phase(r)),
        ("rendition", opt(r.processed_key.clone())),
        ("poster", opt(r.poster_key.clone())),
        (
            "attempts",
            format!("{} ({} handed back on purpose)", r.attempts, r.interruptions),
        ),
        ("error", opt(r.error.clone())),
        ("failure kind", opt(r.failure_kind.map(|k| k.to_string()))),
        (
            "re-sends",
            match &r.resend_reason {
                Some(why) => format!("{} (last: {why})", r.resends),
                None => r.resends.to_string(),
            },
        ),
        ("created", time(Some(r.created_at))),
        ("updated", time(Some(r.updated_at))),
        ("started", time(r.processing_started_at)),
        ("processed", time(r.processed_at)),
        ("event id", opt(r.event_id.map(|id| id.to_string()))),
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
    let mut out: String = rows.iter().map(|(k, v)| format!("{k:>16}: {v}\n")).collect();
    out.push_str(&outputs(r));
    out
}

/// The outputs and cost the row records, one line each.
fn outputs(r: &VideoRow) -> String {
    let mut lines = Vec::new();
    let parsed = r
        .outputs
        .clone()
        .and_then(|v| serde_json::from_value::<Outputs>(v).ok());
    if let Some(o) = parsed {
        for (i, rendition) in o.renditions.iter().enumerate() {
            lines.push((
                if i == 0 { "outputs" } else { "" },
                format!(
                    "{} {}x{} {} B, {} kb/s (peak {}) {}",
                    rendition.name,
                    rendition.width,
                    rendition.height,
                    rendition.bytes,
                    rendition.average_kbps,
                    rendition.peak_kbps,
                    rendition.key
                ),
            ));
        }
        if let Some(h) = &o.hls {
            lines.push(("hls", format!("{} ({} objects)", h.master, h.objects)));
        }
        if let Some(s) = &o.storyboard {
            lines.push((
                "storyboard",
                format!("{} + {} ({} thumbnails)", s.sprite, s.vtt, s.thumbnails),
            ));
        }
        lines.push(("objects", format!("{} ({} B)", o.objects, o.bytes)));
    }
    if let Some(c) = r.cost.clone().and_then(|v| serde_json::from_value::<Cost>(v).ok()) {
        let cpu = c.cpu_seconds.map_or("? CPU s".into(), |s| format!("{s:.1} CPU s"));
        let dollars = c.dollars.map(|d| format!(", ${d:.6}")).unwrap_or_default();
        let w = &c.wall_seconds;
        lines.push((
            "cost",
            format!(
                "{cpu}{dollars}; wall: download {:.1} s, transcode {:.1} s, upload {:.1} s",
                w.download, w.transcode, w.upload
            ),
        ));
    }
    lines.iter().map(|(k, v)| format!("{k:>16}: {v}\n")).collect()
}

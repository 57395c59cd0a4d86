//! Completion events: one JSON message per final outcome, to an SNS topic
//! (`EVENTS_TOPIC_ARN`) and/or an SQS queue (`EVENTS_QUEUE_URL`), so the
//! platform's API need not poll.
//!
//! Delivery is at least once, through an outbox in the row: the event's
//! `id` is written with the outcome in the same UPDATE, and the row says
//! once it is published (`event_published_at`). The job that recorded the
//! outcome publishes it; if it cannot (the topic is down, a crash), the
//! reconciler publishes what the outbox still holds, for the outcomes it
//! decides itself too. A publication may be repeated (a crash between the
//! publish and its mark), always with the same `id`: consumers must be
//! idempotent on `id`. Outcomes recorded more than [`OUTBOX_HORIZON`] ago
//! are not published late (events turned on later do not replay history).
//!
//! Schema, version 1 (`"version": 1`):
//!
//! ```json
//! {"version": 1, "id": "<uuid>", "type": "video.processed", "video_id": "<uuid>",
//!  "time": "2026-11-30T12:00:00Z", "attempts": 1,
//!  "rendition": {"key": "processed/<id>/<claim>.mp4", "bytes": 1234567, "duration_seconds": 30.0},
//!  "poster": {"key": "processed/<id>/<claim>.jpg"},
//!  "source": {"key": "originals/<id>.mov", "bytes": 45678901, "duration_seconds": 41.2,
//!             "width": 1080, "height": 1920}}
//!
//! {"version": 1, "id": "<uuid>", "type": "video.failed", "video_id": "<uuid>",
//!  "time": "2026-11-30T12:00:00Z", "attempts": 1,
//!  "failure": {"class": "input", "kind": "no_video",
//!              "reason": "s3://bucket/originals/<id>.m4a: no video stream: it holds audio"}}
//! ```
//!
//! Version 2 (`"version": 2`, the default; `EVENTS_VERSION=1` keeps
//! version 1 while consumers move) is version 1 with two more members on
//! `video.processed`, from the row's `outputs` and `cost` columns
//! ([`crate::outputs`]):
//!
//! ```json
//! {"version": 2, "id": "<uuid>", "type": "video.processed", …the members of version 1…,
//!  "outputs": {
//!    "renditions": [
//!      {"name": "720p", "key": "processed/<id>/<claim>.mp4", "width": 1280, "height": 720,
//!       "bytes": 9876543, "average_kbps": 2600, "peak_kbps": 4400},
//!      {"name": "360p", "key": "processed/<id>/<claim>/360p.mp4", "width": 640, "height": 360,
//!       "bytes": 2345678, "average_kbps": 620, "peak_kbps": 1350}],
//!    "hls": {"master": "processed/<id>/<claim>/hls/master.m3u8", "objects": 37},
//!    "storyboard": {"sprite": "processed/<id>/<claim>/storyboard.jpg",
//!                   "vtt": "processed/<id>/<claim>/storyboard.vtt", "thumbnails": 30,
//!                   "thumbnail_width": 160, "thumbnail_height": 90, "interval_seconds": 1.0},
//!    "objects": 41, "bytes": 12500000},
//!  "cost": {"cpu_seconds": 38.7, "peak_rss_bytes": 201326592,
//!           "wall_seconds": {"download": 0.4, "transcode": 21.3, "upload": 0.9},
//!           "vcpu_hour_price": 0.0446, "dollars": 0.00047944}}
//! ```
//!
//! `hls` and `storyboard` appear when made; `cost.cpu_seconds` is `null`
//! when transcodes run in the worker's own process (`ISOLATION=in-process`),
//! and `vcpu_hour_price`/`dollars` appear when `COST_PER_VCPU_HOUR` is set.
//! `video.failed` is the same in both versions but for `version`.
//!
//! `failure.class` is the row's `failure_kind`: `input` (the upload cannot
//! be processed), `gave_up` (transient failures on every allowed attempt),
//! `crashed` (its transcode crashed on every attempt), `over_memory` (it
//! needs more than `MEMORY_PER_JOB`) or `stranded` (no worker took it up);
//! `failure.kind` is the stable name of the failure.

use serde::Serialize;
use uuid::Uuid;

use crate::db::{Status, VideoRow};
use crate::failure::FailureClass;

/// How old an outcome may be and still have its event published late.
pub const OUTBOX_HORIZON: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The schema's newest version, the default.
pub const LATEST_VERSION: u32 = 2;

/// The versions a worker can publish (`EVENTS_VERSION`).
pub const VERSIONS: std::ops::RangeInclusive<u32> = 1..=LATEST_VERSION;

/// Where events go.
#[derive(Clone, Debug, Default)]
pub struct Publisher {
    /// The SNS client and topic ARN.
    topic: Option<(aws_sdk_sns::Client, String)>,
    /// The SQS client and queue URL.
    queue: Option<(aws_sdk_sqs::Client, String)>,
    /// The schema version published; 0 stands for [`LATEST_VERSION`].
    version: u32,
}

/// A failure to publish an event.
#[derive(Debug, thiserror::Error)]
#[error("cannot publish the {kind} event of video {video_id} to {target}: {message}")]
pub struct PublishError {
    kind: &'static str,
    video_id: Uuid,
    target: String,
    message: String,
    /// SNS's or SQS's error code, when it answered.
    code: Option<String>,
}

impl PublishError {
    /// A refusal only an operator can fix (the topic's or queue's policy,
    /// KMS, a missing topic, credentials), or an outage.
    pub fn class(&self) -> FailureClass {
        const CONFIGURATION: &[&str] = &[
            "AuthorizationError",
            "AuthorizationErrorException",
            "AccessDenied",
            "AccessDeniedException",
            "NotFound",
            "NotFoundException",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ];
        match self.code.as_deref() {
            Some(code) if CONFIGURATION.contains(&code) || code.starts_with("KMS") || code.starts_with("Kms") => {
                FailureClass::Configuration
            }
            _ => FailureClass::Outage,
        }
    }
}

/// One completion event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Completion {
    /// The schema's version.
    pub version: u32,
    /// The same for every publication of the same outcome.
    pub id: Uuid,
    /// `video.processed` or `video.failed`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The video.
    pub video_id: Uuid,
    /// When the outcome was recorded (RFC 3339, UTC).
    pub time: String,
    /// Attempts it took.
    pub attempts: i32,
    /// The rendition, when processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendition: Option<Rendition>,
    /// The poster, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poster: Option<Poster>,
    /// The original, when processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Why, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Version 2: every output, when processed ([`crate::outputs::Outputs`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<serde_json::Value>,
    /// Version 2: what the job cost, when processed ([`crate::outputs::Cost`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<serde_json::Value>,
}

/// The rendition of a processed video.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rendition {
    /// Its S3 key.
    pub key: String,
    /// Its size.
    pub bytes: Option<i64>,
    /// Its length.
    pub duration_seconds: Option<f64>,
}

/// The poster of a processed video.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Poster {
    /// Its S3 key.
    pub key: String,
}

/// The original upload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Source {
    /// Its S3 key.
    pub key: String,
    /// Its size.
    pub bytes: Option<i64>,
    /// Its declared length.
    pub duration_seconds: Option<f64>,
    /// Its display width.
    pub width: Option<i32>,
    /// Its display height.
    pub height: Option<i32>,
}

/// Why a video failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    /// `input`, `gave_up` or `stranded`.
    pub class: String,
    /// The failure's stable name (`no_video`, `corrupt`, `timed_out`, …).
    pub kind: String,
    /// The one-line reason.
    pub reason: String,
}

/// An event's `time`: RFC 3339 in UTC with milliseconds,
/// `2026-12-06T13:00:00.123Z`, the published schema's form.
fn event_time(at: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

impl Completion {
    /// The event of a row's recorded outcome in schema `version` (1 or 2);
    /// `None` unless the row is processed or failed with an event id.
    pub fn of(row: &VideoRow, version: u32) -> Option<Completion> {
        let id = row.event_id?;
        let v2 = version >= 2;
        let base = |kind| Completion {
            version: if v2 { 2 } else { 1 },
            id,
            kind,
            video_id: row.id,
            time: event_time(row.updated_at),
            attempts: row.attempts,
            rendition: None,
            poster: None,
            source: None,
            failure: None,
            outputs: None,
            cost: None,
        };
        match row.status {
            Status::Processed => Some(Completion {
                rendition: row.processed_key.as_ref().map(|key| Rendition {
                    key: key.clone(),
                    bytes: row.processed_bytes,
                    duration_seconds: row.processed_duration_seconds,
                }),
                poster: row.poster_key.as_ref().map(|key| Poster { key: key.clone() }),
                source: Some(Source {
                    key: row.original_key.clone(),
                    bytes: row.original_bytes,
                    duration_seconds: row.source_duration_seconds,
                    width: row.source_width,
                    height: row.source_height,
                }),
                time: event_time(row.processed_at.unwrap_or(row.updated_at)),
                outputs: row.outputs.clone().filter(|_| v2),
                cost: row.cost.clone().filter(|_| v2),
                ..base("video.processed")
            }),
            Status::Failed => Some(Completion {
                failure: Some(Failure {
                    class: row.failure_kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
                    kind: row.last_error_kind.clone().unwrap_or_default(),
                    reason: row.error.clone().unwrap_or_default(),
                }),
                ..base("video.failed")
            }),
            Status::Pending | Status::Processing => None,
        }
    }
}

impl Publisher {
    /// Publishes to the topic and/or the queue given; to nowhere if neither.
    pub fn new(clients: &crate::aws::Clients, topic_arn: Option<&str>, queue_url: Option<&str>) -> Self {
        Publisher {
            topic: topic_arn.map(|t| (clients.sns.clone(), t.to_owned())),
            queue: queue_url.map(|q| (clients.sqs.clone(), q.to_owned())),
            version: LATEST_VERSION,
        }
    }

    /// Publishes schema `version` instead of the latest (one of
    /// [`VERSIONS`]: consumers not yet moved to version 2 keep version 1).
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The schema version published.
    pub fn version(&self) -> u32 {
        if self.version == 0 {
            LATEST_VERSION
        } else {
            self.version
        }
    }

    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.topic.is_some() || self.queue.is_some()
    }

    /// Whether the targets exist and answer (`vidworker check`): the
    /// topic's or queue's attributes, read. Publishing itself has no dry
    /// run; the first event proves it.
    pub async fn check(&self) -> Result<String, String> {
        let mut found = Vec::new();
        if let Some((client, arn)) = &self.topic {
            let attrs = client
                .get_topic_attributes()
                .topic_arn(arn)
                .send()
                .await
                .map_err(|e| format!("{arn}: {}", crate::aws::describe(&e)))?;
            let subscriptions = attrs
                .attributes()
                .and_then(|a| a.get("SubscriptionsConfirmed"))
                .map_or("?", String::as_str)
                .to_owned();
            found.push(format!("{arn}: {subscriptions} confirmed subscription(s)"));
        }
        if let Some((client, url)) = &self.queue {
            client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| format!("{url}: {}", crate::aws::describe(&e)))?;
            found.push(format!("{url}: answers"));
        }
        Ok(format!("{} (schema v{})", found.join("; "), self.version()))
    }

    /// Publishes the event of a row's recorded outcome if the outbox still
    /// holds it (recorded within [`OUTBOX_HORIZON`], not marked published);
    /// returns its id, for the caller to mark published
    /// ([`crate::db::Db::record_published`]), or `None` when there was
    /// nothing to publish (or events go nowhere).
    pub async fn publish_outbox(&self, row: &VideoRow) -> Result<Option<Uuid>, PublishError> {
        let horizon = time::Duration::try_from(OUTBOX_HORIZON).unwrap_or(time::Duration::MAX);
        let pending = row.event_published_at.is_none() && time::OffsetDateTime::now_utc() - row.updated_at < horizon;
        let Some(event) = Completion::of(row, self.version()).filter(|_| self.is_enabled() && pending) else {
            return Ok(None);
        };
        self.publish(&event).await?;
        Ok(Some(event.id))
    }

    /// Publishes one event everywhere it goes.
    pub async fn publish(&self, event: &Completion) -> Result<(), PublishError> {
        let body = serde_json::to_string(event).unwrap_or_default();
        let fail = |target: &str, message: String, code: Option<&str>| PublishError {
            kind: event.kind,
            video_id: event.video_id,
            target: target.to_owned(),
            message,
            code: code.map(str::to_owned),
        };
        if let Some((client, topic)) = &self.topic {
            client
                .publish()
                .topic_arn(topic)
                .message(&body)
                .message_attributes(
                    "type",
                    aws_sdk_sns::types::MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(event.kind)
                        .build()
                        .map_err(|e| fail(topic, e.to_string(), None))?,
                )
                .send()
                .await
                .map_err(|e| {
                    fail(
                        topic,
                        crate::aws::describe(&e),
                        aws_sdk_sns::error::ProvideErrorMetadata::code(&e),
                    )
                })?;
        }
        if let Some((client, queue)) = &self.queue {
            client
                .send_message()
                .queue_url(queue)
                .message_body(&body)
                .send()
                .await
                .map_err(|e| {
                    fail(
                        queue,
                        crate::aws::describe(&e),
                        aws_sdk_sqs::error::ProvideErrorMetadata::code(&e),
                    )
                })?;
        }
        tracing::info!(event = "announced", kind = event.kind, video_id = %event.video_id, event_id = %event.id, "published the completion event");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_are_utc_with_milliseconds() {
        let at = time::macros::datetime!(2026-12-06 13:00:05.123_456 +02:00);
        assert_eq!(event_time(at), "2026-12-06T11:00:05.123Z");
        let whole = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(event_time(whole), "2026-01-02T03:04:05.000Z");
    }
}

//! SQS: receiving jobs, keeping them invisible while they run, and the
//! three ways a message leaves: deleted, made visible again later, or moved
//! to the dead-letter queue.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};

/// SQS refuses to keep a message invisible for more than 12 hours after it
/// was received.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// The message attribute that carries why the worker dead-lettered a
/// message.
pub const REASON_ATTRIBUTE: &str = "vidworker-reason";

/// The production settings `vidworker queue-init` applies.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// How long a received message stays invisible.
    pub visibility_timeout: Duration,
    /// How long an unprocessed message is kept.
    pub retention: Duration,
    /// How long the dead-letter queue keeps messages.
    pub dead_letter_retention: Duration,
    /// Receives before SQS moves a message to the dead-letter queue.
    pub max_receive_count: u32,
    /// Long-polling wait.
    pub receive_wait: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            visibility_timeout: Duration::from_secs(15 * 60),
            retention: Duration::from_secs(4 * 24 * 3600),
            dead_letter_retention: Duration::from_secs(14 * 24 * 3600),
            // Well above the worker's own MAX_ATTEMPTS (3): the worker
            // gives up (and dead-letters) first, from the row's attempts;
            // SQS's limit only catches what the worker cannot handle, such
            // as a message that crashes every worker that receives it.
            max_receive_count: 10,
            receive_wait: Duration::from_secs(20),
        }
    }
}

/// An SQS failure. All are transient for a job: the message stays in the
/// queue and comes back.
#[derive(Debug, thiserror::Error)]
#[error("queue {queue}: cannot {action}: {message}")]
pub struct QueueError {
    /// The queue's URL.
    pub queue: String,
    /// What was being done.
    pub action: &'static str,
    /// The SDK's full error text.
    pub message: String,
    /// The SQS error code, if any.
    pub code: Option<String>,
}

impl QueueError {
    /// A refusal that only an operator can fix, or an outage.
    pub fn class(&self) -> crate::failure::FailureClass {
        const CONFIG: &[&str] = &[
            "AccessDenied",
            "AccessDeniedException",
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
            "KMS.AccessDeniedException",
            "KmsAccessDenied",
            "KmsDisabled",
            "KmsNotFound",
        ];
        match self.code.as_deref() {
            Some(code) if CONFIG.contains(&code) => crate::failure::FailureClass::Configuration,
            _ => crate::failure::FailureClass::Outage,
        }
    }
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Received {
    /// SQS's id of the message.
    pub message_id: String,
    /// The handle to delete it or change its visibility.
    pub receipt: String,
    /// The body, untouched.
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// When we received it (for the 12-hour visibility cap).
    pub received_at: Instant,
    /// When it was first sent, if SQS said.
    pub sent_at: Option<SystemTime>,
    /// Its message attributes, kept to forward it to the dead-letter queue
    /// untouched.
    pub attributes: HashMap<String, MessageAttributeValue>,
}

/// What the queue itself says about its configuration.
#[derive(Clone, Debug, Default)]
pub struct QueueInfo {
    /// The redrive policy's receive limit, if a dead-letter queue is set.
    pub max_receive_count: Option<u32>,
    /// The dead-letter queue's ARN.
    pub dead_letter_arn: Option<String>,
    /// How long the queue keeps a message (`MessageRetentionPeriod`).
    pub retention: Option<Duration>,
}

/// SQS's default message retention, when the queue does not say.
const DEFAULT_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);

/// One queue (and its dead-letter queue once resolved).
#[derive(Clone, Debug)]
pub struct Queue {
    client: Client,
    url: String,
    dead_letter_url: Option<String>,
    retention: Option<Duration>,
}

impl Queue {
    /// A handle on the queue at `url`.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Queue {
            client,
            url: url.into(),
            dead_letter_url: None,
            retention: None,
        }
    }

    /// How long the queue keeps a message, once [`Queue::inspect`] read it
    /// (SQS's default, 4 days, before).
    pub fn retention(&self) -> Duration {
        self.retention.unwrap_or(DEFAULT_RETENTION)
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue's URL, once [`Queue::inspect`] found it.
    pub fn dead_letter_url(&self) -> Option<&str> {
        self.dead_letter_url.as_deref()
    }

    fn error<E, R>(&self, action: &'static str, err: SdkError<E, R>) -> QueueError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
        R: std::fmt::Debug + 'static,
    {
        self.error_for(&self.url, action, err)
    }

    fn error_for<E, R>(&self, url: &str, action: &'static str, err: SdkError<E, R>) -> QueueError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
        R: std::fmt::Debug + 'static,
    {
        QueueError {
            queue: url.to_owned(),
            action,
            code: err.code().map(str::to_owned),
            message: crate::aws::describe(&err),
        }
    }

    /// Reads the queue's configuration and finds its dead-letter queue.
    pub async fn inspect(&mut self) -> Result<QueueInfo, QueueError> {
        let attrs = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| self.error("read its attributes", e))?;
        let attrs = attrs.attributes().cloned().unwrap_or_default();
        let mut info = QueueInfo::default();
        if let Some(policy) = attrs.get(&QueueAttributeName::RedrivePolicy) {
            let policy: serde_json::Value = serde_json::from_str(policy).unwrap_or_default();
            info.max_receive_count = match &policy["maxReceiveCount"] {
                serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            };
            info.dead_letter_arn = policy["deadLetterTargetArn"].as_str().map(str::to_owned);
        }
        info.retention = attrs
            .get(&QueueAttributeName::MessageRetentionPeriod)
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs);
        self.retention = info.retention;
        if let Some(arn) = &info.dead_letter_arn {
            let name = arn.rsplit(':').next().unwrap_or_default();
            let url = self
                .client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| self.error("find its dead-letter queue", e))?;
            self.dead_letter_url = url.queue_url().map(str::to_owned);
        }
        Ok(info)
    }

    /// Long-polls for up to `max` messages (1 to 10), each hidden for
    /// `visibility` from now (whatever the queue's default is).
    pub async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        self.receive_from(&self.url, max, wait, visibility).await
    }

    /// Up to `max` messages of the dead-letter queue (none if there is no
    /// dead-letter queue), each hidden for `visibility`, without waiting.
    pub async fn receive_dead_letters(&self, max: usize, visibility: Duration) -> Result<Vec<Received>, QueueError> {
        match &self.dead_letter_url {
            Some(dlq) => self.receive_from(dlq, max, Duration::ZERO, visibility).await,
            None => Ok(Vec::new()),
        }
    }

    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs().min(MAX_VISIBILITY.as_secs()) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| self.error_for(url, "receive messages", e))?;
        let now = Instant::now();
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let attribute = |name| m.attributes().and_then(|a| a.get(&name));
                Some(Received {
                    message_id: m.message_id()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    received_at: now,
                    sent_at: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
                    attributes: m.message_attributes().cloned().unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Visible messages waiting in the queue.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.counts().await?.0)
    }

    /// Every message in the queue: visible, in flight (received and hidden)
    /// and delayed. 0 means no message sent before now can still be
    /// waiting (SQS's counts are approximate and lag by up to a minute).
    pub async fn total(&self) -> Result<u64, QueueError> {
        let (visible, in_flight, delayed) = self.counts().await?;
        Ok(visible + in_flight + delayed)
    }

    /// (visible, in flight, delayed) messages.
    async fn counts(&self) -> Result<(u64, u64, u64), QueueError> {
        let attrs = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| self.error("read its depth", e))?;
        let count = |name: QueueAttributeName| {
            attrs
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }

    /// Deletes a message received from the dead-letter queue.
    pub async fn delete_dead_letter(&self, receipt: &str) -> Result<(), QueueError> {
        let Some(dlq) = &self.dead_letter_url else {
            return Ok(());
        };
        self.client
            .delete_message()
            .queue_url(dlq)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error_for(dlq, "delete a dead letter", e))
    }

    /// Makes a message received from the dead-letter queue visible again.
    pub async fn release_dead_letter(&self, receipt: &str) -> Result<(), QueueError> {
        let Some(dlq) = &self.dead_letter_url else {
            return Ok(());
        };
        self.client
            .change_message_visibility()
            .queue_url(dlq)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error_for(dlq, "release a dead letter", e))
    }

    /// Deletes a message: its work is done and recorded.
    pub async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("delete a message", e))
    }

    /// Makes a message invisible for `timeout` from now (0: visible at once).
    pub async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs().min(MAX_VISIBILITY.as_secs()) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("change a message's visibility", e))
    }

    /// Sends a message; returns its id.
    pub async fn send(&self, body: &str) -> Result<String, QueueError> {
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| self.error("send a message", e))?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }

    /// Moves a message to the dead-letter queue at once, body and attributes
    /// untouched, with the reason in a `vidworker-reason` attribute. Without
    /// a dead-letter queue the message is logged whole and deleted.
    pub async fn dead_letter(&self, msg: &Received, reason: &str) -> Result<(), QueueError> {
        let Some(dlq) = &self.dead_letter_url else {
            tracing::error!(message_id = %msg.message_id, body = %msg.body, reason, "no dead-letter queue configured; the message is logged here and deleted");
            return self.delete(&msg.receipt).await;
        };
        let mut attributes = msg.attributes.clone();
        // SQS allows 10 attributes; the reason is the one we may drop.
        if attributes.len() < 10 {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason.chars().take(1000).collect::<String>())
                .build()
                .map_err(|e| QueueError {
                    queue: dlq.clone(),
                    action: "describe a dead letter",
                    message: e.to_string(),
                    code: None,
                })?;
            attributes.insert(REASON_ATTRIBUTE.to_owned(), value);
        }
        self.client
            .send_message()
            .queue_url(dlq)
            .message_body(&msg.body)
            .set_message_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| self.error_for(dlq, "forward a message to the dead-letter queue", e))?;
        self.delete(&msg.receipt).await
    }

    /// Creates the queue and its dead-letter queue with `settings`, or
    /// brings existing ones to those settings. Returns (queue URL,
    /// dead-letter queue URL).
    pub async fn create(client: &Client, name: &str, settings: &QueueSettings) -> Result<(String, String), QueueError> {
        let err = |queue: &str, action, e: &aws_sdk_sqs::Error| QueueError {
            queue: queue.to_owned(),
            action,
            code: e.code().map(str::to_owned),
            message: crate::aws::describe(e),
        };
        let dlq_name = format!("{name}-dlq");
        let dlq_attrs = HashMap::from([(
            QueueAttributeName::MessageRetentionPeriod,
            settings.dead_letter_retention.as_secs().to_string(),
        )]);
        let dlq_url = create_or_update(client, &dlq_name, dlq_attrs)
            .await
            .map_err(|e| err(&dlq_name, "create", &e))?;
        let arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| err(&dlq_url, "read the ARN of", &e.into()))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": settings.max_receive_count.to_string(),
        })
        .to_string();
        let attrs = HashMap::from([
            (
                QueueAttributeName::VisibilityTimeout,
                settings.visibility_timeout.as_secs().to_string(),
            ),
            (
                QueueAttributeName::MessageRetentionPeriod,
                settings.retention.as_secs().to_string(),
            ),
            (
                QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                settings.receive_wait.as_secs().to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ]);
        let url = create_or_update(client, name, attrs)
            .await
            .map_err(|e| err(name, "create", &e))?;
        Ok((url, dlq_url))
    }
}

/// CreateQueue is idempotent only when the attributes match; otherwise set
/// them on the existing queue.
async fn create_or_update(
    client: &Client,
    name: &str,
    attrs: HashMap<QueueAttributeName, String>,
) -> Result<String, aws_sdk_sqs::Error> {
    match client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attrs.clone()))
        .send()
        .await
    {
        Ok(out) => Ok(out.queue_url().unwrap_or_default().to_owned()),
        Err(e) if e.code() == Some("QueueAlreadyExists") || e.code() == Some("QueueNameExists") => {
            let url = client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await?
                .queue_url()
                .unwrap_or_default()
                .to_owned();
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attrs))
                .send()
                .await?;
            Ok(url)
        }
        Err(e) => Err(e.into()),
    }
}

/// The queue name at the end of a queue URL.
pub fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

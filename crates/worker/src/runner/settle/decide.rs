//! A message's fate, decided in one place: [`decide`] is a pure function of
//! what happened to the job ([`Outcome`]) and what the row and the message
//! say ([`Facts`]). It returns everything that follows ([`Settlement`]):
//! the write to the row, what to do with the message (and what to do with
//! it instead if the row cannot be written or the event cannot be
//! published), what to log and count, and whether a completion event goes
//! out. [`super::apply`] carries it out without deciding anything again,
//! always in the same order: row first, then the event, then the message.
//!
//! The rules (the README's outcome table is this function in prose):
//! - every [`FailureClass`] is matched by name: a new class is a compile
//!   error here until its fate is decided;
//! - giving up is decided from the row's own attempts, minus those handed
//!   back on purpose (shutdown, configuration errors), never from SQS's
//!   receive count;
//! - the worker moves what it gives up on to the dead-letter queue itself,
//!   with the reason, so the queue's own redrive limit (kept well above the
//!   worker's) only catches what the worker cannot handle;
//! - a message this worker no longer owns (its claim was lost) is never
//!   touched.

use std::time::Duration;

use crate::db::{Attempt, FailureKind};
use crate::failure::FailureClass;
use crate::message::Malformed;
use crate::runner::JobError;

/// Longest delay before a message comes back.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);
/// Extra wait after another worker's lease would expire.
const BUSY_MARGIN: Duration = Duration::from_secs(5);

/// What happened to a job.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The body is not a job.
    Malformed(Malformed),
    /// No row for the video (yet).
    Unknown,
    /// The video is already processed.
    Duplicate,
    /// The video failed for good earlier (its input).
    AlreadyFailed,
    /// Another worker holds a live lease for this long.
    Busy(Duration),
    /// The claim could not be made (the database failed).
    ClaimFailed(JobError),
    /// Claimed, but every counted attempt so far ended with the worker
    /// gone (killed, out of memory) before it could record anything.
    DiedRepeatedly,
    /// The rendition is made and uploaded; it needs recording.
    Done,
    /// The job failed.
    Failed(JobError),
}

/// What the row and the message say, and the worker's rules.
#[derive(Clone, Debug)]
pub(crate) struct Facts {
    /// Attempts allowed before giving up.
    pub max_attempts: u32,
    /// What the claim said, once claimed.
    pub claim: Option<ClaimFacts>,
    /// SQS's receive count of the message.
    pub receive_count: u32,
    /// How long ago the message was sent.
    pub message_age: Duration,
    /// How long a message for an unknown video is retried.
    pub unknown_patience: Duration,
    /// The first retry delay.
    pub retry_backoff: Duration,
    /// How long a message waits after a configuration error.
    pub configuration_delay: Duration,
    /// The job was stopped by the shutdown (intake stopped, grace over).
    pub shutting_down: bool,
    /// Completion events go somewhere (a topic or a queue is configured).
    pub events_enabled: bool,
}

/// What the claim said.
#[derive(Clone, Debug)]
pub(crate) struct ClaimFacts {
    /// Attempts that count toward giving up, this one included.
    pub counted_attempts: u32,
    /// Earlier attempts that ran past the time limit.
    pub timeouts: u32,
}

/// Everything that follows from an outcome.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settlement {
    /// The write to the row.
    pub row: RowAction,
    /// What to do with the message once the row is written.
    pub message: MessageAction,
    /// What to do with it instead when the row cannot be written (the
    /// database failed): it comes back and the next attempt redoes the job.
    pub if_unwritten: MessageAction,
    /// What to log and count once the row is written.
    pub told: Told,
    /// Publish the completion event of the row's final outcome, after the
    /// row and before the message.
    pub announce: bool,
    /// What to do with the message instead when the event cannot be
    /// published: it comes back, finds the outcome recorded and publishes
    /// again (the same event id).
    pub if_unannounced: MessageAction,
}

/// The write to the row, fenced on this worker's claim.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RowAction {
    /// Nothing to write.
    Keep,
    /// Mark processed with the rendition.
    Record,
    /// Mark failed.
    Fail {
        kind: FailureKind,
        reason: String,
        error_kind: String,
    },
    /// Hand the video back (`pending`).
    Release {
        reason: Option<String>,
        error_kind: Option<String>,
        attempt: Attempt,
    },
}

/// What to do with the message, once the row is written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum MessageAction {
    /// The work is recorded: delete it.
    Delete,
    /// Make it visible again after this long.
    Retry(Duration),
    /// Move it to the dead-letter queue with this reason.
    DeadLetter(String),
    /// Not ours any more: do not touch it.
    Leave,
}

/// What to log and count once the row says it: one telemetry event each.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Told {
    /// The rendition is recorded.
    Processed,
    /// The video failed for good.
    Failed {
        kind: String,
        reason: String,
        /// The input's fault, rather than attempts used up.
        permanent: bool,
    },
    /// Handed back at shutdown.
    Released,
    /// A duplicate delivery of a processed video.
    Duplicate,
    /// A late delivery of a video that failed for good.
    AlreadyFailed,
    /// Another worker holds the video.
    Busy(Duration),
    /// No row for the video (yet).
    UnknownVideo,
    /// Handed back to be tried again after `delay`.
    Retry {
        kind: String,
        reason: String,
        delay: Duration,
        /// A configuration error: counted for the operator's alarm.
        configuration: bool,
    },
    /// Nothing to tell (the message was not ours, or is not a job).
    Nothing,
}

/// How the row write went, for [`Settlement::message_after`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The row says what was decided.
    Yes,
    /// The claim was taken over first: the message is not ours any more.
    ClaimLost,
    /// The database failed: nothing was written.
    Failed,
}

impl Settlement {
    /// What to do with the message after the row write went `written`.
    pub(crate) fn message_after(&self, written: Written) -> MessageAction {
        match written {
            Written::Yes => self.message.clone(),
            Written::ClaimLost => MessageAction::Leave,
            Written::Failed => self.if_unwritten.clone(),
        }
    }
}

/// The message's fate. Pure: see the module docs for the rules.
pub(crate) fn decide(outcome: &Outcome, facts: &Facts) -> Settlement {
    use MessageAction::*;
    let keep = |message, told| settlement(RowAction::Keep, message, told, facts);
    match outcome {
        Outcome::Malformed(why) => keep(DeadLetter(format!("malformed message: {why}")), Told::Nothing),
        Outcome::Unknown if facts.message_age < facts.unknown_patience => {
            // The platform may send before its insert is visible.
            let left = facts.unknown_patience - facts.message_age;
            let delay = backoff(facts.retry_backoff, facts.receive_count).min(left);
            keep(Retry(delay), Told::UnknownVideo)
        }
        Outcome::Unknown => keep(
            DeadLetter(format!(
                "no such video in the database {} s after the message was sent",
                facts.message_age.as_secs()
            )),
            Told::UnknownVideo,
        ),
        Outcome::Duplicate => keep(Delete, Told::Duplicate),
        Outcome::AlreadyFailed => keep(Delete, Told::AlreadyFailed),
        Outcome::Busy(remaining) => keep(Retry(*remaining + BUSY_MARGIN), Told::Busy(*remaining)),
        Outcome::ClaimFailed(e) => decide_claim_failure(e, facts),
        Outcome::DiedRepeatedly => {
            let attempts = facts.claim.as_ref().map_or(0, |c| c.counted_attempts).saturating_sub(1);
            give_up(
                format!("gave up after {attempts} attempts: the worker stopped during each (killed or out of memory?)"),
                "died",
                facts,
            )
        }
        Outcome::Done => settlement(RowAction::Record, Delete, Told::Processed, facts),
        Outcome::Failed(e) => decide_failure(e, facts),
    }
}

/// The claim itself failed: nothing was claimed, so the row is untouched
/// and the message comes back.
fn decide_claim_failure(e: &JobError, facts: &Facts) -> Settlement {
    let (delay, configuration) = match (facts.shutting_down, e.class()) {
        (true, _) => (Duration::ZERO, false),
        (false, FailureClass::Configuration) => (facts.configuration_delay, true),
        (
            false,
            FailureClass::Input
            | FailureClass::Timeout
            | FailureClass::Outage
            | FailureClass::Transient
            | FailureClass::Interrupted
            | FailureClass::ClaimLost,
        ) => (backoff(facts.retry_backoff, facts.receive_count), false),
    };
    let told = Told::Retry {
        kind: e.kind().to_owned(),
        reason: e.to_string(),
        delay,
        configuration,
    };
    settlement(RowAction::Keep, MessageAction::Retry(delay), told, facts)
}

fn decide_failure(e: &JobError, facts: &Facts) -> Settlement {
    let (reason, kind) = (e.to_string(), e.kind());
    let attempts = facts.claim.as_ref().map_or(1, |c| c.counted_attempts);
    let timed_out_before = facts.claim.as_ref().is_some_and(|c| c.timeouts > 0);
    let fail_input = || {
        let told = Told::Failed {
            kind: kind.to_owned(),
            reason: reason.clone(),
            permanent: true,
        };
        let row = RowAction::Fail {
            kind: FailureKind::Input,
            reason: reason.clone(),
            error_kind: kind.to_owned(),
        };
        settlement(row, MessageAction::Delete, told, facts)
    };
    let release = |attempt, delay, configuration| {
        let row = RowAction::Release {
            reason: Some(reason.clone()),
            error_kind: Some(kind.to_owned()),
            attempt,
        };
        let told = Told::Retry {
            kind: kind.to_owned(),
            reason: reason.clone(),
            delay,
            configuration,
        };
        settlement(row, MessageAction::Retry(delay), told, facts)
    };
    match e.class() {
        FailureClass::ClaimLost => settlement(RowAction::Keep, MessageAction::Leave, Told::Nothing, facts),
        FailureClass::Interrupted => {
            let row = RowAction::Release {
                reason: None,
                error_kind: None,
                attempt: Attempt::Uncounted,
            };
            settlement(row, MessageAction::Retry(Duration::ZERO), Told::Released, facts)
        }
        FailureClass::Input => fail_input(),
        // A job over the time limit may have met a slow machine: it gets
        // one more attempt; a second timeout is the input's fault.
        FailureClass::Timeout if timed_out_before => fail_input(),
        FailureClass::Configuration => release(Attempt::Uncounted, facts.configuration_delay, true),
        FailureClass::Timeout | FailureClass::Outage | FailureClass::Transient if attempts >= facts.max_attempts => {
            give_up(format!("gave up after {attempts} attempts: {reason}"), kind, facts)
        }
        FailureClass::Timeout => release(Attempt::TimedOut, backoff(facts.retry_backoff, attempts), false),
        FailureClass::Outage | FailureClass::Transient => {
            release(Attempt::Counted, backoff(facts.retry_backoff, attempts), false)
        }
    }
}

fn give_up(reason: String, kind: &str, facts: &Facts) -> Settlement {
    let told = Told::Failed {
        kind: kind.to_owned(),
        reason: reason.clone(),
        permanent: false,
    };
    let row = RowAction::Fail {
        kind: FailureKind::GaveUp,
        reason: reason.clone(),
        error_kind: kind.to_owned(),
    };
    settlement(row, MessageAction::DeadLetter(reason), told, facts)
}

/// The settlement of a row write and a message action: the fallbacks and
/// the announcement follow from them and the facts.
fn settlement(row: RowAction, message: MessageAction, told: Told, facts: &Facts) -> Settlement {
    let attempt = facts
        .claim
        .as_ref()
        .map_or(facts.receive_count, |c| c.counted_attempts.max(1));
    let if_unwritten = MessageAction::Retry(if facts.shutting_down {
        Duration::ZERO
    } else {
        backoff(facts.retry_backoff, attempt)
    });
    // A final row (just written, or met again by a redelivery whose event
    // may not have gone out) is announced before its message goes.
    let final_row = matches!(row, RowAction::Record | RowAction::Fail { .. })
        || matches!(told, Told::Duplicate | Told::AlreadyFailed);
    let settled = matches!(message, MessageAction::Delete | MessageAction::DeadLetter(_));
    Settlement {
        announce: facts.events_enabled && final_row && settled,
        if_unannounced: MessageAction::Retry(backoff(facts.retry_backoff, facts.receive_count)),
        row,
        message,
        if_unwritten,
        told,
    }
}

/// Exponential backoff: `first`, doubled for every earlier attempt, at most
/// [`MAX_RETRY_DELAY`]. Jitter is added when the delay is applied.
pub(crate) fn backoff(first: Duration, attempt: u32) -> Duration {
    let factor = 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    Duration::from_secs_f64((first.as_secs_f64() * factor).min(MAX_RETRY_DELAY.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;

    fn facts() -> Facts {
        Facts {
            max_attempts: 3,
            claim: Some(ClaimFacts {
                counted_attempts: 1,
                timeouts: 0,
            }),
            receive_count: 1,
            message_age: Duration::from_secs(1),
            unknown_patience: Duration::from_secs(300),
            retry_backoff: Duration::from_secs(10),
            configuration_delay: Duration::from_secs(300),
            shutting_down: false,
            events_enabled: true,
        }
    }

    fn on_attempt(n: u32) -> Facts {
        Facts {
            claim: Some(ClaimFacts {
                counted_attempts: n,
                timeouts: 0,
            }),
            ..facts()
        }
    }

    fn transient() -> JobError {
        JobError::WorkDir(std::io::Error::other("disk full"))
    }

    fn outage() -> JobError {
        JobError::Storage(StorageError::Service {
            action: "download",
            bucket: "b".into(),
            key: "k".into(),
            message: "SlowDown".into(),
            code: Some("SlowDown".into()),
        })
    }

    fn denied() -> JobError {
        JobError::Storage(StorageError::Service {
            action: "download",
            bucket: "b".into(),
            key: "k".into(),
            message: "AccessDenied: no".into(),
            code: Some("AccessDenied".into()),
        })
    }

    fn missing() -> JobError {
        JobError::Storage(StorageError::NotFound {
            bucket: "b".into(),
            key: "k".into(),
        })
    }

    fn timed_out() -> JobError {
        JobError::Processor {
            original: "s3://b/k".into(),
            source: processor::Error::TimedOut {
                path: "k".into(),
                after: Duration::from_secs(600),
            },
        }
    }

    fn broken_watermark() -> JobError {
        JobError::Processor {
            original: "s3://b/k".into(),
            source: processor::Error::InvalidSpec("watermark /etc/vidworker/logo.png: cannot decode".into()),
        }
    }

    #[test]
    fn done_is_recorded_then_deleted_and_announced() {
        let s = decide(&Outcome::Done, &facts());
        assert_eq!((&s.row, &s.message), (&RowAction::Record, &MessageAction::Delete));
        assert_eq!(s.told, Told::Processed);
        assert!(s.announce);
    }

    #[test]
    fn a_bad_input_fails_once_and_its_message_is_deleted() {
        let s = decide(&Outcome::Failed(missing()), &facts());
        assert!(
            matches!(
                s.row,
                RowAction::Fail {
                    kind: FailureKind::Input,
                    ..
                }
            ),
            "{s:?}"
        );
        assert_eq!(s.message, MessageAction::Delete);
        assert!(matches!(s.told, Told::Failed { permanent: true, .. }), "{s:?}");
        assert!(s.announce);
    }

    #[test]
    fn transient_failures_retry_with_backoff_then_give_up_on_the_last_counted_attempt() {
        let s = decide(&Outcome::Failed(transient()), &on_attempt(1));
        assert!(
            matches!(
                s.row,
                RowAction::Release {
                    attempt: Attempt::Counted,
                    ..
                }
            ),
            "{s:?}"
        );
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(10)));
        assert!(!s.announce, "nothing final to announce");
        let s = decide(&Outcome::Failed(outage()), &on_attempt(2));
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(20)));
        let s = decide(&Outcome::Failed(transient()), &on_attempt(3));
        let RowAction::Fail { kind, reason, .. } = &s.row else {
            panic!("{s:?}")
        };
        assert_eq!(*kind, FailureKind::GaveUp);
        assert!(reason.starts_with("gave up after 3 attempts: cannot create a working directory"));
        assert_eq!(s.message, MessageAction::DeadLetter(reason.clone()));
        assert!(matches!(s.told, Told::Failed { permanent: false, .. }), "{s:?}");
        assert!(s.announce);
    }

    #[test]
    fn shutdown_hands_back_at_once_without_counting_the_attempt() {
        let s = decide(&Outcome::Failed(JobError::Shutdown), &on_attempt(3));
        assert!(
            matches!(
                s.row,
                RowAction::Release {
                    attempt: Attempt::Uncounted,
                    ..
                }
            ),
            "{s:?}"
        );
        assert_eq!(s.message, MessageAction::Retry(Duration::ZERO));
        assert_eq!(s.told, Told::Released);
    }

    #[test]
    fn a_lost_claim_touches_neither_row_nor_message() {
        let s = decide(&Outcome::Failed(JobError::ClaimLost), &facts());
        assert_eq!((&s.row, &s.message), (&RowAction::Keep, &MessageAction::Leave));
        assert_eq!(s.told, Told::Nothing);
    }

    #[test]
    fn a_configuration_error_is_handed_back_uncounted_and_waits_for_an_operator() {
        for error in [denied(), broken_watermark()] {
            let s = decide(&Outcome::Failed(error), &on_attempt(3));
            assert!(
                matches!(
                    s.row,
                    RowAction::Release {
                        attempt: Attempt::Uncounted,
                        ..
                    }
                ),
                "{s:?}"
            );
            assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(300)));
            assert!(
                matches!(
                    s.told,
                    Told::Retry {
                        configuration: true,
                        ..
                    }
                ),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_timeout_is_retried_once_then_blamed_on_the_input() {
        let s = decide(&Outcome::Failed(timed_out()), &on_attempt(1));
        assert!(
            matches!(
                s.row,
                RowAction::Release {
                    attempt: Attempt::TimedOut,
                    ..
                }
            ),
            "{s:?}"
        );
        let mut f = on_attempt(2);
        if let Some(c) = f.claim.as_mut() {
            c.timeouts = 1;
        }
        let s = decide(&Outcome::Failed(timed_out()), &f);
        assert!(
            matches!(
                s.row,
                RowAction::Fail {
                    kind: FailureKind::Input,
                    ..
                }
            ),
            "{s:?}"
        );
        assert_eq!(s.message, MessageAction::Delete);
    }

    #[test]
    fn unknown_videos_wait_for_their_row_then_go_to_the_dead_letter_queue() {
        let mut f = Facts { claim: None, ..facts() };
        let s = decide(&Outcome::Unknown, &f);
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(10)));
        assert_eq!(s.told, Told::UnknownVideo);
        f.message_age = Duration::from_secs(295);
        assert_eq!(
            decide(&Outcome::Unknown, &f).message,
            MessageAction::Retry(Duration::from_secs(5))
        );
        f.message_age = Duration::from_secs(301);
        let s = decide(&Outcome::Unknown, &f);
        assert!(
            matches!(s.message, MessageAction::DeadLetter(ref r) if r.contains("no such video")),
            "{s:?}"
        );
        assert_eq!(s.row, RowAction::Keep);
        assert!(!s.announce, "no row, nothing to announce");
    }

    #[test]
    fn duplicates_are_deleted_and_announced_again_and_busy_videos_come_back_after_the_lease() {
        let s = decide(&Outcome::Duplicate, &facts());
        assert_eq!(
            (s.message, s.told, s.announce),
            (MessageAction::Delete, Told::Duplicate, true)
        );
        let s = decide(&Outcome::AlreadyFailed, &facts());
        assert_eq!((s.message, s.announce), (MessageAction::Delete, true));
        let s = decide(&Outcome::Busy(Duration::from_secs(60)), &facts());
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(65)));
        assert!(!s.announce);
    }

    #[test]
    fn a_claim_that_failed_never_touches_the_row() {
        let s = decide(&Outcome::ClaimFailed(outage()), &Facts { claim: None, ..facts() });
        assert_eq!(s.row, RowAction::Keep);
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(10)));
        let s = decide(
            &Outcome::ClaimFailed(outage()),
            &Facts {
                shutting_down: true,
                claim: None,
                ..facts()
            },
        );
        assert_eq!(s.message, MessageAction::Retry(Duration::ZERO));
        let s = decide(&Outcome::ClaimFailed(denied()), &Facts { claim: None, ..facts() });
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(300)));
        assert!(
            matches!(
                s.told,
                Told::Retry {
                    configuration: true,
                    ..
                }
            ),
            "{s:?}"
        );
    }

    #[test]
    fn a_video_whose_worker_died_every_time_is_given_up() {
        let s = decide(&Outcome::DiedRepeatedly, &on_attempt(4));
        assert!(
            matches!(s.row, RowAction::Fail { kind: FailureKind::GaveUp, ref reason, .. } if reason.contains("after 3 attempts")),
            "{s:?}"
        );
        assert!(matches!(s.message, MessageAction::DeadLetter(_)));
    }

    #[test]
    fn malformed_messages_go_to_the_dead_letter_queue_untouched() {
        let s = decide(&Outcome::Malformed(Malformed::NoVideoId), &facts());
        assert_eq!(s.row, RowAction::Keep);
        assert!(matches!(s.message, MessageAction::DeadLetter(ref r) if r.starts_with("malformed message")));
        assert!(!s.announce);
    }

    #[test]
    fn an_unwritten_row_brings_the_message_back_and_a_lost_claim_leaves_it() {
        let s = decide(&Outcome::Done, &on_attempt(2));
        assert_eq!(s.message_after(Written::Yes), MessageAction::Delete);
        assert_eq!(s.message_after(Written::ClaimLost), MessageAction::Leave);
        assert_eq!(
            s.message_after(Written::Failed),
            MessageAction::Retry(Duration::from_secs(20))
        );
        let stopping = Facts {
            shutting_down: true,
            ..on_attempt(2)
        };
        let s = decide(&Outcome::Failed(JobError::Shutdown), &stopping);
        assert_eq!(s.message_after(Written::Failed), MessageAction::Retry(Duration::ZERO));
    }

    #[test]
    fn nothing_is_announced_when_events_go_nowhere() {
        let quiet = Facts {
            events_enabled: false,
            ..facts()
        };
        assert!(!decide(&Outcome::Done, &quiet).announce);
        assert!(!decide(&Outcome::Failed(missing()), &quiet).announce);
    }
}

//! A message's fate, decided in one place: [`decide`] is a pure function of
//! what happened to the job ([`Outcome`]) and what the row and the message
//! say ([`Facts`]); it returns a [`Settlement`] (what to write to the row,
//! what to do with the message) that [`super::job`] carries out, always in
//! the same order: row first, then the message.
//!
//! The rules (the README's outcome table is this function in prose):
//! - giving up is decided from the row's own attempts, minus those handed
//!   back on purpose (shutdown, configuration errors), never from SQS's
//!   receive count;
//! - the worker moves what it gives up on to the dead-letter queue itself,
//!   with the reason, so the queue's own redrive limit (kept well above the
//!   worker's) only catches what the worker cannot handle;
//! - a message this worker no longer owns (its claim was lost) is never
//!   touched.

use std::time::Duration;

use crate::db::FailureKind;
use crate::job::{FailureClass, JobError, Malformed};

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
    /// Counted attempts (this one included) and the previous failure's
    /// kind, once claimed.
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
}

/// What the claim said.
#[derive(Clone, Debug)]
pub(crate) struct ClaimFacts {
    /// Attempts that count toward giving up, this one included.
    pub counted_attempts: u32,
    /// The previous failure's stable name.
    pub last_error_kind: Option<String>,
}

/// What to do with the row and the message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settlement {
    pub row: RowAction,
    pub message: MessageAction,
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
    /// Hand the video back (`pending`); `interrupted` attempts do not count.
    Release {
        reason: Option<String>,
        error_kind: Option<String>,
        interrupted: bool,
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

/// The message's fate. Pure: see the module docs for the rules.
pub(crate) fn decide(outcome: &Outcome, facts: &Facts) -> Settlement {
    use MessageAction::*;
    let keep = |message| Settlement {
        row: RowAction::Keep,
        message,
    };
    match outcome {
        Outcome::Malformed(why) => keep(DeadLetter(format!("malformed message: {why}"))),
        Outcome::Unknown if facts.message_age < facts.unknown_patience => {
            // The platform may send before its insert is visible.
            let left = facts.unknown_patience - facts.message_age;
            keep(Retry(backoff(facts.retry_backoff, facts.receive_count).min(left)))
        }
        Outcome::Unknown => keep(DeadLetter(format!(
            "no such video in the database {} s after the message was sent",
            facts.message_age.as_secs()
        ))),
        Outcome::Duplicate | Outcome::AlreadyFailed => keep(Delete),
        Outcome::Busy(remaining) => keep(Retry(*remaining + BUSY_MARGIN)),
        Outcome::ClaimFailed(_) if facts.shutting_down => keep(Retry(Duration::ZERO)),
        Outcome::ClaimFailed(e) if e.class() == FailureClass::Configuration => keep(Retry(facts.configuration_delay)),
        Outcome::ClaimFailed(_) => keep(Retry(backoff(facts.retry_backoff, facts.receive_count))),
        Outcome::DiedRepeatedly => {
            let attempts = facts.claim.as_ref().map_or(0, |c| c.counted_attempts) - 1;
            give_up(
                format!("gave up after {attempts} attempts: the worker stopped during each (killed or out of memory?)"),
                "died",
            )
        }
        Outcome::Done => Settlement {
            row: RowAction::Record,
            message: Delete,
        },
        Outcome::Failed(e) => decide_failure(e, facts),
    }
}

fn decide_failure(e: &JobError, facts: &Facts) -> Settlement {
    let reason = e.to_string();
    let kind = e.kind();
    let attempts = facts.claim.as_ref().map_or(1, |c| c.counted_attempts);
    match e {
        JobError::ClaimLost => {
            return Settlement {
                row: RowAction::Keep,
                message: MessageAction::Leave,
            };
        }
        JobError::Shutdown => {
            return Settlement {
                row: RowAction::Release {
                    reason: None,
                    error_kind: None,
                    interrupted: true,
                },
                message: MessageAction::Retry(Duration::ZERO),
            };
        }
        _ => {}
    }
    // A job over the time limit may have met a slow machine: it gets one
    // more attempt; a second timeout is the input's fault.
    let repeated_timeout =
        kind == "timed_out" && facts.claim.as_ref().and_then(|c| c.last_error_kind.as_deref()) == Some("timed_out");
    match e.class() {
        FailureClass::Permanent if kind != "timed_out" || repeated_timeout => Settlement {
            row: RowAction::Fail {
                kind: FailureKind::Input,
                reason,
                error_kind: kind.to_owned(),
            },
            message: MessageAction::Delete,
        },
        FailureClass::Configuration => Settlement {
            row: RowAction::Release {
                reason: Some(reason),
                error_kind: Some(kind.to_owned()),
                interrupted: true,
            },
            message: MessageAction::Retry(facts.configuration_delay),
        },
        _ if attempts >= facts.max_attempts => give_up(format!("gave up after {attempts} attempts: {reason}"), kind),
        _ => Settlement {
            row: RowAction::Release {
                reason: Some(reason),
                error_kind: Some(kind.to_owned()),
                interrupted: false,
            },
            message: MessageAction::Retry(backoff(facts.retry_backoff, attempts)),
        },
    }
}

fn give_up(reason: String, kind: &str) -> Settlement {
    Settlement {
        row: RowAction::Fail {
            kind: FailureKind::GaveUp,
            reason: reason.clone(),
            error_kind: kind.to_owned(),
        },
        message: MessageAction::DeadLetter(reason),
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
                last_error_kind: None,
            }),
            receive_count: 1,
            message_age: Duration::from_secs(1),
            unknown_patience: Duration::from_secs(300),
            retry_backoff: Duration::from_secs(10),
            configuration_delay: Duration::from_secs(300),
            shutting_down: false,
        }
    }

    fn on_attempt(n: u32) -> Facts {
        Facts {
            claim: Some(ClaimFacts {
                counted_attempts: n,
                last_error_kind: None,
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

    #[test]
    fn done_is_recorded_then_deleted() {
        let s = decide(&Outcome::Done, &facts());
        assert_eq!((s.row, s.message), (RowAction::Record, MessageAction::Delete));
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
    }

    #[test]
    fn transient_failures_retry_with_backoff_then_give_up_on_the_last_counted_attempt() {
        let s = decide(&Outcome::Failed(transient()), &on_attempt(1));
        assert!(matches!(s.row, RowAction::Release { interrupted: false, .. }), "{s:?}");
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(10)));
        let s = decide(&Outcome::Failed(outage()), &on_attempt(2));
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(20)));
        let s = decide(&Outcome::Failed(transient()), &on_attempt(3));
        let RowAction::Fail { kind, reason, .. } = &s.row else {
            panic!("{s:?}")
        };
        assert_eq!(*kind, FailureKind::GaveUp);
        assert!(reason.starts_with("gave up after 3 attempts: cannot create a working directory"));
        assert_eq!(s.message, MessageAction::DeadLetter(reason.clone()));
    }

    #[test]
    fn shutdown_hands_back_at_once_without_counting_the_attempt() {
        let s = decide(&Outcome::Failed(JobError::Shutdown), &on_attempt(3));
        assert!(matches!(s.row, RowAction::Release { interrupted: true, .. }), "{s:?}");
        assert_eq!(s.message, MessageAction::Retry(Duration::ZERO));
    }

    #[test]
    fn a_lost_claim_touches_neither_row_nor_message() {
        let s = decide(&Outcome::Failed(JobError::ClaimLost), &facts());
        assert_eq!((s.row, s.message), (RowAction::Keep, MessageAction::Leave));
    }

    #[test]
    fn a_configuration_error_is_handed_back_uncounted_and_waits_for_an_operator() {
        let s = decide(&Outcome::Failed(denied()), &on_attempt(3));
        assert!(matches!(s.row, RowAction::Release { interrupted: true, .. }), "{s:?}");
        assert_eq!(s.message, MessageAction::Retry(Duration::from_secs(300)));
    }

    #[test]
    fn a_timeout_is_retried_once_then_blamed_on_the_input() {
        let s = decide(&Outcome::Failed(timed_out()), &on_attempt(1));
        assert!(matches!(s.row, RowAction::Release { .. }), "{s:?}");
        let mut f = on_attempt(2);
        if let Some(c) = f.claim.as_mut() {
            c.last_error_kind = Some("timed_out".into());
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
    }

    #[test]
    fn duplicates_are_deleted_and_busy_videos_come_back_after_the_lease() {
        assert_eq!(decide(&Outcome::Duplicate, &facts()).message, MessageAction::Delete);
        assert_eq!(decide(&Outcome::AlreadyFailed, &facts()).message, MessageAction::Delete);
        assert_eq!(
            decide(&Outcome::Busy(Duration::from_secs(60)), &facts()).message,
            MessageAction::Retry(Duration::from_secs(65))
        );
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
    }
}

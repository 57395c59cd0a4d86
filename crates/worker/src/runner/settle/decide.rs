//! A message's fate, decided in one place: [`decide`] is a pure function of
//! what happened to the job ([`Outcome`]) and what the row and the message
//! say ([`Facts`]). It returns everything that follows ([`Settlement`]):
//! the write to the row, what to do with the message (and what to do with
//! it instead if the row cannot be written or the event cannot be
//! published), what to log and count, and whether a completion event goes
//! out. [`super::apply`] carries it out without deciding anything again:
//! row first, then the event, then the message; except a job stopped at
//! the end of the grace period, whose message goes back first (the
//! machine's stop budget is short) and whose row follows with a short
//! deadline, the reconciler covering a row that cannot be written.
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

/// What happened to a job.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The body is not a job.
    Malformed(Malformed),
    /// No row for the video (yet).
    Unknown,
    /// The video is already processed.
    Duplicate,
    /// The video failed for good earlier.
    AlreadyFailed,
    /// The message is a stray copy of one an operator's requeue superseded.
    Stale,
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
    /// row and before the message. It is in the row already (the outbox):
    /// if it cannot be published now, the reconciler publishes it, and the
    /// message's fate does not change.
    pub announce: bool,
    /// Settle the message before the row: a job handed back at the end of
    /// the grace period, when the stop budget is short.
    pub message_first: bool,
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
    /// A stray copy of a superseded message.
    Stale,
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
        Outcome::Stale => keep(Delete, Told::Stale),
        Outcome::ClaimFailed(e) => decide_claim_failure(e, facts),
        Outcome::DiedRepeatedly => {
            let attempts = facts.claim.as_ref().map_or(0, |c| c.counted_attempts).saturating_sub(1);
            give_up(
                FailureKind::GaveUp,
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
        (true, _) | (_, FailureClass::Interrupted) => (Duration::ZERO, false),
        (false, FailureClass::Configuration) => (facts.configuration_delay, true),
        (
            false,
            FailureClass::Input
            | FailureClass::Timeout
            | FailureClass::Outage
            | FailureClass::Transient
            | FailureClass::Crashed
            | FailureClass::OverMemory
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
    let fail_for_good = |stored| {
        let told = Told::Failed {
            kind: kind.to_owned(),
            reason: reason.clone(),
            permanent: true,
        };
        let row = RowAction::Fail {
            kind: stored,
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
        FailureClass::Input => fail_for_good(FailureKind::Input),
        FailureClass::OverMemory => fail_for_good(FailureKind::OverMemory),
        // A job over the time limit may have met a slow machine: it gets
        // one more attempt; a second timeout is the input's fault.
        FailureClass::Timeout if timed_out_before => fail_for_good(FailureKind::Input),
        FailureClass::Configuration => release(Attempt::Uncounted, facts.configuration_delay, true),
        FailureClass::Crashed if attempts >= facts.max_attempts => give_up(
            FailureKind::Crashed,
            format!("gave up after {attempts} attempts: {reason}"),
            kind,
            facts,
        ),
        FailureClass::Timeout | FailureClass::Outage | FailureClass::Transient if attempts >= facts.max_attempts => {
            give_up(
                FailureKind::GaveUp,
                format!("gave up after {attempts} attempts: {reason}"),
                kind,
                facts,
            )
        }
        FailureClass::Timeout => release(Attempt::TimedOut, backoff(facts.retry_backoff, attempts), false),
        FailureClass::Outage | FailureClass::Transient | FailureClass::Crashed => {
            release(Attempt::Counted, backoff(facts.retry_backoff, attempts), false)
        }
    }
}

fn give_up(stored: FailureKind, reason: String, kind: &str, facts: &Facts) -> Settlement {
    let told = Told::Failed {
        kind: kind.to_owned(),
        reason: reason.clone(),
        permanent: false,
    };
    let row = RowAction::Fail {
        kind: stored,
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
    let handed_back_late = facts.shutting_down
        && matches!(
            row,
            RowAction::Release {
                attempt: Attempt::Uncounted,
                ..
            }
        );
    Settlement {
        announce: facts.events_enabled && final_row && settled,
        message_first: handed_back_late,
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

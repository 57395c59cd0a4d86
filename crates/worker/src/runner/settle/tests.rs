//! The settlement table: [`decide`](super::decide) for every outcome
//! and the facts that change it.

use std::time::Duration;

use super::decide::*;
use crate::db::{Attempt, FailureKind};
use crate::message::Malformed;
use crate::runner::JobError;
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
    let stopping = Facts {
        shutting_down: true,
        ..on_attempt(3)
    };
    let s = decide(&Outcome::Failed(JobError::Shutdown), &stopping);
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
    assert!(s.message_first, "the stop budget is short: the message goes back first");
    let s = decide(&Outcome::Failed(transient()), &on_attempt(1));
    assert!(!s.message_first, "otherwise the row is written first");
}

#[test]
fn a_stray_copy_of_a_superseded_message_is_deleted_and_nothing_else() {
    let s = decide(&Outcome::Stale, &facts());
    assert_eq!(
        (&s.row, &s.message, &s.told),
        (&RowAction::Keep, &MessageAction::Delete, &Told::Stale)
    );
    assert!(!s.announce);
}

#[test]
fn a_claim_stopped_by_the_shutdown_goes_back_at_once() {
    let s = decide(
        &Outcome::ClaimFailed(JobError::Shutdown),
        &Facts { claim: None, ..facts() },
    );
    assert_eq!(
        (&s.row, &s.message),
        (&RowAction::Keep, &MessageAction::Retry(Duration::ZERO))
    );
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
fn duplicates_are_deleted_and_their_outcome_announced_if_it_was_not() {
    let s = decide(&Outcome::Duplicate, &facts());
    assert_eq!(
        (s.message, s.told, s.announce),
        (MessageAction::Delete, Told::Duplicate, true)
    );
    let s = decide(&Outcome::AlreadyFailed, &facts());
    assert_eq!((s.message, s.announce), (MessageAction::Delete, true));
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

fn crashed() -> JobError {
    JobError::Child(crate::isolate::ChildError::Crashed {
        name: "s3://b/k".into(),
        how: "killed by SIGSEGV".into(),
    })
}

fn over_memory() -> JobError {
    JobError::Child(crate::isolate::ChildError::OverMemory {
        name: "s3://b/k".into(),
        limit: 150 << 20,
    })
}

#[test]
fn a_crash_is_retried_as_an_attempt_of_its_video_then_failed_as_crashed() {
    let first = decide(&Outcome::Failed(crashed()), &on_attempt(1));
    assert!(
        matches!(
            first.row,
            RowAction::Release {
                attempt: Attempt::Counted,
                ..
            }
        ),
        "{first:?}"
    );
    assert!(matches!(first.message, MessageAction::Retry(_)), "{first:?}");
    let last = decide(&Outcome::Failed(crashed()), &on_attempt(3));
    assert!(
        matches!(
            last.row,
            RowAction::Fail {
                kind: FailureKind::Crashed,
                ..
            }
        ),
        "{last:?}"
    );
    assert!(matches!(last.message, MessageAction::DeadLetter(_)), "{last:?}");
    assert!(last.announce);
}

#[test]
fn a_job_over_its_memory_fails_at_once_as_over_memory() {
    let s = decide(&Outcome::Failed(over_memory()), &on_attempt(1));
    assert!(
        matches!(
            s.row,
            RowAction::Fail {
                kind: FailureKind::OverMemory,
                ..
            }
        ),
        "{s:?}"
    );
    assert_eq!(s.message, MessageAction::Delete);
    assert!(matches!(s.told, Told::Failed { permanent: true, .. }), "{s:?}");
}

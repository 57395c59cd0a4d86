//! The stored states in Rust mirror the migrations' CHECK constraints, read
//! back from PostgreSQL's own catalogue with `psql`: a value one side knows
//! and the other does not is a row that cannot be written or read.

use std::collections::BTreeSet;
use std::time::Duration;

use worker::db::{FailureKind, Phase, Status};

use crate::support::*;

/// The quoted values of a CHECK constraint, e.g. `CHECK ((status = ANY
/// (ARRAY['pending'::text, …])))` → {pending, …}.
fn allowed(stack: &Stack, constraint: &str) -> BTreeSet<String> {
    let def = stack.sql(&format!(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = '{constraint}'"
    ));
    assert!(def.starts_with("CHECK"), "{constraint}: {def:?}");
    def.split('\'').skip(1).step_by(2).map(str::to_owned).collect()
}

fn names<const N: usize>(all: [&'static str; N]) -> BTreeSet<String> {
    all.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_states_are_exactly_what_the_constraints_allow() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    assert_eq!(
        allowed(&stack, "videos_status_check"),
        names(Status::ALL.map(Status::as_str))
    );
    assert_eq!(
        allowed(&stack, "videos_phase_check"),
        names(Phase::ALL.map(Phase::as_str))
    );
    assert_eq!(
        allowed(&stack, "videos_failure_kind_check"),
        names(FailureKind::ALL.map(FailureKind::as_str))
    );
}

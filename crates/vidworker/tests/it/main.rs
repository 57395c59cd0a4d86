//! The `vidworker` binary against the real stack: `vidworker run` as a
//! child process that is signalled, killed and scraped, and the operator's
//! commands. The stack is the worker library's test support, included
//! here, plus `binary.rs`. One test binary, so the AWS SDK links once.

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

#[path = "../../../worker/tests/it/support/mod.rs"]
mod support;

mod binary;

mod chaos;
mod cli;
mod cloudwatch;
mod events;
mod isolation;
mod kills;
mod package;
mod production;
mod shutdown;
mod stack_deploy;
mod startup;
mod termination;

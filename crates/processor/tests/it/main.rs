//! The processor's integration tests, in one binary: what a viewer sees in
//! a rendition of each awkward kind of upload (`rendition`), the rendition
//! played and seeked in a real Chromium (`browser`), the failures and their
//! one-line errors (`failures`), and hostile inputs that must open nothing
//! but themselves (`untrusted`).
//!
//! Three tests stay binaries of their own because they change or measure
//! the whole process: `memory.rs` (the heap across jobs), `output_full.rs`
//! (a file-size rlimit and SIGXFSZ), and `fuzz.rs` (re-runs itself for each
//! input, to catch crashes). They include `common.rs` and `hostile.rs` from
//! here.

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

mod common;
mod hostile;

mod browser;
mod failures;
mod ladder;
mod rendition;
mod untrusted;

//! The disk fills up while the rendition is being written: the write fails
//! on the encoding thread, and the job must end with that error, in one
//! line naming the output, and leave nothing behind.
//!
//! Alone in its own test binary: it caps the size of any file the process
//! writes (RLIMIT_FSIZE), which would break tests running beside it.

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

#[path = "it/common.rs"]
mod common;

use common::*;
use processor::{CancelFlag, ErrorClass, RenditionSpec};
use rustix::process::{Resource, Rlimit, setrlimit};
use tokio::signal::unix::{SignalKind, signal};

/// The limit applies to every file the process writes, its own output too:
/// when the harness's stdout or stderr is a log file already past the
/// limit (`scripts/test.sh > ci.log`), its next line would fail. The test
/// then runs again in a child whose output is a pipe.
fn output_is_a_file() -> bool {
    use std::os::fd::AsFd;
    let is_file = |fd| rustix::fs::fstat(fd).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_file());
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    is_file(stdout.as_fd()) || is_file(stderr.as_fd())
}

#[test]
fn a_disk_that_fills_up_midway_fails_the_job_and_leaves_nothing() {
    if std::env::var_os("OUTPUT_FULL_CHILD").is_none() && output_is_a_file() {
        let child = std::process::Command::new(std::env::current_exe().expect("this test"))
            .args([
                "--exact",
                "a_disk_that_fills_up_midway_fails_the_job_and_leaves_nothing",
                "--nocapture",
            ])
            .env("OUTPUT_FULL_CHILD", "1")
            .output()
            .expect("the test runs again");
        print!("{}", String::from_utf8_lossy(&child.stdout));
        eprint!("{}", String::from_utf8_lossy(&child.stderr));
        assert!(child.status.success(), "the test in a child: {}", child.status);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.mp4");
    let limit = 64 << 10;
    // A write past RLIMIT_FSIZE sends SIGXFSZ, whose default action kills
    // the process; caught, the write fails with EFBIG as on a full disk.
    // Tokio's signal handler catches it with no unsafe code here (ignoring
    // it with libc::signal would need some). The runtime and the stream
    // live to the end of the test.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime for the signal handler");
    let _xfsz = {
        let _in_runtime = runtime.enter();
        signal(SignalKind::from_raw(libc::SIGXFSZ)).expect("catch SIGXFSZ")
    };
    // This process only: no file it writes may grow past 64 KiB.
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: Some(limit),
            maximum: None,
        },
    )
    .expect("setrlimit");
    let result = processor::process(
        &fixture("landscape-1080p30.mp4"),
        &out,
        &RenditionSpec::default(),
        |_| {},
        &CancelFlag::new(),
    );
    let err = result.expect_err("a rendition larger than the disk allows was accepted");
    assert_eq!(err.kind(), "output_io", "{err}");
    assert_eq!(
        err.class(),
        ErrorClass::Environment,
        "a full disk is worth a retry: {err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&out.display().to_string()) && !message.contains('\n'),
        "{message}"
    );
    assert_eq!(
        files_in(dir.path()),
        Vec::<String>::new(),
        "left behind after: {message}"
    );
}

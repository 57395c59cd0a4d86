//! The disk fills up while the rendition is being written: the write fails
//! on the encoding thread, and the job must end with that error, in one
//! line naming the output, and leave nothing behind.
//!
//! Alone in its own test binary: it caps the size of any file the process
//! writes (RLIMIT_FSIZE), which would break tests running beside it.

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

mod common;

use common::*;
use processor::{CancelFlag, ErrorClass, RenditionSpec};

#[test]
fn a_disk_that_fills_up_midway_fails_the_job_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.mp4");
    let limit = 64 << 10;
    // SAFETY: ignoring SIGXFSZ makes an oversized write fail with EFBIG
    // instead of killing the process; setrlimit only changes this
    // process's limit, with a valid struct.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let cap = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &cap), 0);
    }
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

//! Inputs that cannot become a rendition fail with one clear line, the right
//! kind of error, and nothing left behind.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;
use processor::{CancelFlag, Error, ErrorClass, Limits, RenditionSpec};

/// Processes into a fresh directory and returns the error and the
/// directory's contents afterwards.
fn fail(input: &Path, spec: &RenditionSpec, cancel: &CancelFlag) -> (Error, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.mp4");
    let err = match processor::process(input, &out, spec, |_| {}, cancel) {
        Ok(r) => panic!("{} was accepted: {r:?}", input.display()),
        Err(e) => e,
    };
    (err, files_in(dir.path()))
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[track_caller]
fn one_line_naming(err: &Error, path: &Path, words: &str) {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert!(msg.starts_with(&path.display().to_string()), "names the input: {msg}");
    assert!(msg.contains(words), "says {words:?}: {msg}");
}

#[test]
fn random_bytes_are_not_a_media_file() {
    let dir = tempfile::tempdir().expect("dir");
    for seed in 1..=8u64 {
        let path = dir.path().join(format!("upload-{seed}.mp4"));
        fs::write(&path, noise(200_000, seed)).expect("write");
        let (err, left) = fail(&path, &RenditionSpec::default(), &CancelFlag::new());
        assert!(
            matches!(
                err,
                Error::NotMedia { .. } | Error::Corrupt { .. } | Error::NoVideo { .. }
            ),
            "seed {seed}: {err}"
        );
        assert_eq!(err.class(), ErrorClass::Input, "{err}");
        assert!(left.is_empty(), "nothing left behind: {left:?}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn an_empty_file_is_not_a_media_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("empty.mov");
    fs::write(&path, b"").expect("write");
    let (err, _) = fail(&path, &RenditionSpec::default(), &CancelFlag::new());
    assert_eq!(err.kind(), "not_media");
    one_line_naming(&err, &path, "the file is empty");
}

#[test]
fn an_audio_only_file_has_no_video_stream() {
    let path = fixture("audio-only.m4a");
    let (err, left) = fail(&path, &RenditionSpec::default(), &CancelFlag::new());
    assert_eq!(err.kind(), "no_video", "{err}");
    assert_eq!(err.class(), ErrorClass::Input);
    one_line_naming(&err, &path, "no video stream");
    assert!(left.is_empty());
}

#[test]
fn a_truncated_upload_is_reported_as_such() {
    let path = fixture("truncated.mp4");
    let (err, left) = fail(&path, &RenditionSpec::default(), &CancelFlag::new());
    assert_eq!(err.kind(), "corrupt", "{err}");
    assert_eq!(err.class(), ErrorClass::Input);
    one_line_naming(&err, &path, "could be decoded");
    assert!(left.is_empty(), "no partial rendition: {left:?}");
}

#[test]
fn a_missing_file_is_a_permanent_read_error() {
    let path = Path::new("/nonexistent/clip.mp4");
    let (err, _) = fail(path, &RenditionSpec::default(), &CancelFlag::new());
    assert_eq!(err.kind(), "input_io");
    assert_eq!(err.class(), ErrorClass::Input);
    one_line_naming(&err, path, "cannot read");
}

#[test]
fn a_raised_cancel_flag_stops_the_job_and_may_be_retried() {
    let cancel = CancelFlag::new();
    cancel.cancel();
    let path = fixture("landscape-1080p30.mp4");
    let (err, left) = fail(&path, &RenditionSpec::default(), &cancel);
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Environment, "a cancelled job can be retried");
    assert!(left.is_empty());
}

#[test]
fn cancelling_mid_way_leaves_no_partial_output() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("out.mp4");
    let cancel = CancelFlag::new();
    let frames = AtomicU64::new(0);
    let err = processor::process(
        &fixture("landscape-1080p30.mp4"),
        &out,
        &RenditionSpec::default(),
        |p| {
            frames.store(p.frames, Ordering::Relaxed);
            if p.frames == 10 {
                cancel.cancel();
            }
        },
        &cancel,
    )
    .expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert!(frames.load(Ordering::Relaxed) < 20, "stopped within a frame or two");
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
}

#[test]
fn a_job_over_its_time_budget_times_out() {
    let spec = RenditionSpec {
        limits: Limits {
            timeout: Some(Duration::from_millis(1)),
            ..Limits::default()
        },
        ..RenditionSpec::default()
    };
    let path = fixture("landscape-1080p30.mp4");
    let (err, left) = fail(&path, &spec, &CancelFlag::new());
    assert_eq!(err.kind(), "timed_out", "{err}");
    assert_eq!(err.class(), ErrorClass::Timeout, "{err}");
    assert!(left.is_empty());
}

#[test]
fn limits_refuse_large_files_and_pictures() {
    let path = fixture("uhd-4k60.mp4");
    let spec = RenditionSpec {
        limits: Limits {
            max_pixels: 1920 * 1080,
            ..Limits::default()
        },
        ..RenditionSpec::default()
    };
    let (err, _) = fail(&path, &spec, &CancelFlag::new());
    assert_eq!(err.kind(), "limit_exceeded", "{err}");
    one_line_naming(&err, &path, "3840x2160");

    let spec = RenditionSpec {
        limits: Limits {
            max_input_bytes: 100_000,
            ..Limits::default()
        },
        ..RenditionSpec::default()
    };
    let (err, _) = fail(&path, &spec, &CancelFlag::new());
    assert_eq!(err.kind(), "limit_exceeded", "{err}");
    one_line_naming(&err, &path, "byte input limit");

    // Video and audio: two streams, over a limit of one.
    let path = fixture("landscape-1080p30.mp4");
    let spec = RenditionSpec {
        limits: Limits {
            max_streams: 1,
            ..Limits::default()
        },
        ..RenditionSpec::default()
    };
    let (err, _) = fail(&path, &spec, &CancelFlag::new());
    assert_eq!(err.kind(), "limit_exceeded", "{err}");
    one_line_naming(&err, &path, "streams");
}

#[test]
fn an_unwritable_output_is_a_transient_output_error() {
    let out = Path::new("/nonexistent-dir/out.mp4");
    let err = processor::process(
        &fixture("gray-720p.mp4"),
        out,
        &RenditionSpec::default(),
        |_| {},
        &CancelFlag::new(),
    )
    .expect_err("no such directory");
    assert_eq!(err.kind(), "output_io", "{err}");
    assert_eq!(err.class(), ErrorClass::Environment);
}

#[test]
fn an_existing_rendition_is_replaced_whole() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("out.mp4");
    fs::write(&out, b"old rendition").expect("write");
    processor::process(
        &fixture("gray-720p.mp4"),
        &out,
        &RenditionSpec::default(),
        |_| {},
        &CancelFlag::new(),
    )
    .expect("processes");
    assert_eq!(decode(&out).frames.len(), 60);
    assert_eq!(files_in(dir.path()), vec!["out.jpg".to_owned(), "out.mp4".to_owned()]);
}

#[test]
fn probe_reads_what_a_person_needs_to_know() {
    let info = processor::probe(&fixture("portrait-rotated.mp4")).expect("probe");
    assert_eq!((info.coded_width, info.coded_height), (1280, 720));
    assert_eq!((info.display_width, info.display_height), (720, 1280));
    assert_eq!(info.rotation, 90);
    assert!(!info.has_audio);
    let info = processor::probe(&fixture("anamorphic-pal.mkv")).expect("probe");
    assert_eq!((info.sample_aspect_ratio.num, info.sample_aspect_ratio.den), (64, 45));
    assert_eq!((info.display_width, info.display_height), (1024, 576));
    assert_eq!(info.video_codec, "mpeg2video");
    let info = processor::probe(&fixture("landscape-1080p30.mp4")).expect("probe");
    assert!(info.has_audio);
    assert_eq!(info.duration, Some(Duration::from_secs(4)));
    assert_eq!(info.frame_rate.map(|r| r.as_f64()), Some(30.0));
    let info = processor::probe(&fixture("hevc-10bit.mov")).expect("probe");
    assert_eq!(
        (info.video_codec.as_str(), info.pixel_format.as_str()),
        ("hevc", "yuv420p10le")
    );
    let err = processor::probe(&fixture("audio-only.m4a")).expect_err("no video");
    assert_eq!(err.kind(), "no_video");
}

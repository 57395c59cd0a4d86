//! Transcode throughput of `processor::process` on the fixtures.
//!
//! `cargo bench -p vidworker-benches` (release build). Each benchmark is one
//! whole job, file to file, as the worker runs it; criterion reports the
//! time per job and the throughput in input frames per second.
//! `benches/compare-ffmpeg.sh` puts the same jobs side by side with the
//! ffmpeg command line.

#![allow(clippy::expect_used, reason = "benchmark set-up: a failure aborts the run")]

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use processor::{CancelFlag, Card, RenditionSpec};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}

fn bench_job(c: &mut Criterion, name: &str, input: &str, frames: u64, spec: &RenditionSpec) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.mp4");
    // A fixture's name, or a path.
    let input = if input.starts_with('/') {
        PathBuf::from(input)
    } else {
        fixture(input)
    };
    let mut group = c.benchmark_group("process");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(frames));
    group.bench_function(name, |b| {
        b.iter(|| processor::process(&input, &out, spec, |_| {}, &CancelFlag::new()).expect("transcode"));
    });
    group.finish();
}

fn transcode(c: &mut Criterion) {
    let default = RenditionSpec::default();
    // 4 s of 1080p30 H.264 with audio: the typical phone upload.
    bench_job(c, "1080p30_4s_default", "landscape-1080p30.mp4", 120, &default);
    // The same with cards and audio kept: the most work a job does.
    let full = RenditionSpec {
        intro: Some(Card::logo()),
        outro: Some(Card::logo()),
        keep_audio: true,
        ..RenditionSpec::default()
    };
    bench_job(c, "1080p30_4s_cards_audio", "landscape-1080p30.mp4", 120, &full);
    // 4K60 HEVC-class decode load: 1 s of 3840x2160 at 60 fps.
    bench_job(c, "2160p60_1s_default", "uhd-4k60.mp4", 60, &default);
    // A 10-minute upload costs what its first 30 s cost.
    bench_job(c, "10min_upload_capped_at_30s", "long-10min.mp4", 150, &default);
    bench_job(c, "40s_upload_capped_at_30s", "long-40s.mp4", 300, &default);
    // The reference upload of benches/compare-ffmpeg.sh: 60 s of 1080p30 at
    // 15 Mb/s with no colour tags, capped at 30 s (900 frames).
    let reference = reference_upload();
    bench_job(c, "reference_1080p30_untagged", &reference, 900, &default);
}

/// The untagged reference upload, made by `benches/make-reference.sh`
/// (with the ffmpeg CLI) on first use.
fn reference_upload() -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("make-reference.sh");
    let out = std::process::Command::new(&script)
        .output()
        .expect("benches/make-reference.sh runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("paths")
        .lines()
        .next()
        .expect("the untagged reference")
        .to_owned()
}

fn probe(c: &mut Criterion) {
    let input = fixture("landscape-1080p30.mp4");
    c.bench_function("probe/1080p30", |b| b.iter(|| processor::probe(&input).expect("probe")));
}

criterion_group!(benches, transcode, probe);
criterion_main!(benches);

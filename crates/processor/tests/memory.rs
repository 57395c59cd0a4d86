//! A job gives back the memory it took. `vidworker run` processes job after
//! job in one process for days, so whatever one job keeps is lost for good:
//! a packet leak once kept every byte read from each upload (56 MiB per
//! 30 s job at 15 Mb/s).
//!
//! Alone in its own test binary, so no other test allocates meanwhile; the
//! heap is read with [`processor::heap_in_use`] (glibc's count: every arena,
//! plus mmapped blocks), which exists only on glibc.

#![cfg(target_env = "gnu")]
#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

#[path = "it/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use processor::{Card, CardContent, RenditionSpec};

/// Bytes the process has allocated and not freed.
fn heap_in_use() -> u64 {
    processor::heap_in_use() as u64
}

#[test]
fn jobs_one_after_another_keep_no_memory() {
    let spec = RenditionSpec {
        // The intro clip is demuxed by its own loop; it must not keep
        // anything either.
        intro: Some(Card {
            content: CardContent::Clip(fixture("long-40s.mp4")),
            duration: Duration::from_secs(2),
        }),
        keep_audio: true,
        ..RenditionSpec::default()
    };
    let input = fixture("landscape-1080p30.mp4");
    // The first job loads what stays for the process's life: FFmpeg's
    // tables, the logo, the log ring.
    let (_dir, _out, first) = render(&input, &spec);
    let before = heap_in_use();
    for _ in 0..3 {
        render(&input, &spec);
    }
    let kept = heap_in_use().saturating_sub(before);
    // A leak of the packets alone would keep 3 x the bytes read.
    assert!(
        kept < first.input_bytes_read / 4,
        "3 jobs kept {kept} bytes of heap; each read {} bytes of input",
        first.input_bytes_read
    );
}

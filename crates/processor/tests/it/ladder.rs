//! What phones on a mobile network need from one decode: every rendition
//! under its rate cap, a ladder whose keyframes line up, HLS a real parser
//! and hls.js in Chromium accept, and a storyboard whose thumbnails are the
//! rendition's own frames.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use processor::{RateCap, RenditionSpec, Rung};
use serde::Deserialize;

use crate::common::*;

/// A ladder of the primary (720p), the standard 360p and a custom 240p,
/// with HLS and the storyboard.
fn ladder() -> RenditionSpec {
    RenditionSpec {
        preset: "veryfast".into(),
        max_duration: Duration::from_secs(6),
        ladder: vec![
            Rung::named("360p").expect("standard"),
            Rung::parse("small:426x240:500").expect("custom"),
        ],
        hls: true,
        storyboard: true,
        ..RenditionSpec::default()
    }
}

/// The packets' sizes of a rendition's video, by presentation time.
fn packets(path: &Path) -> Vec<(f64, usize)> {
    let mut ictx = ffmpeg_next::format::input(path).expect("opens");
    let stream = ictx.streams().best(ffmpeg_next::media::Type::Video).expect("video");
    let (index, tb) = (stream.index(), f64::from(stream.time_base()));
    ictx.packets()
        .filter(|(s, _)| s.index() == index)
        .map(|(_, p)| (p.pts().unwrap_or(0) as f64 * tb, p.size()))
        .collect()
}

/// The most kbit any `window` seconds of `packets` hold.
fn most_in(packets: &[(f64, usize)], window: f64) -> f64 {
    packets
        .iter()
        .map(|(start, _)| {
            let bytes: usize = packets
                .iter()
                .filter(|(t, _)| *t >= *start && *t < start + window - 1e-6)
                .map(|(_, b)| b)
                .sum();
            bytes as f64 * 8.0 / 1000.0
        })
        .fold(0.0, f64::max)
}

#[test]
fn the_rate_cap_bounds_every_stretch_of_a_high_motion_rendition() {
    let cap = RateCap::new(800);
    // VBV's promise: over any t seconds, at most rate x t + buffer.
    let bound = |t: f64| f64::from(cap.max_kbps) * t + f64::from(cap.buffer_kbits);
    let spec = |cap| RenditionSpec {
        preset: "veryfast".into(),
        poster: false,
        cap,
        ..RenditionSpec::default()
    };
    let (_dir, out, report) = render(&fixture("high-motion-2s.mp4"), &spec(Some(cap)));
    let capped = packets(&out);
    for window in [0.5, 1.0, 2.0] {
        let most = most_in(&capped, window);
        assert!(
            most <= bound(window) * 1.05,
            "{most:.0} kbit in {window} s, over the VBV bound {:.0}",
            bound(window)
        );
    }
    assert!(
        report.renditions[0].peak_kbps as f64 <= bound(1.0),
        "{:?}",
        report.renditions
    );
    // The same clip uncapped breaks the bound: the cap is what holds it.
    let (_dir, out, uncapped) = render(&fixture("high-motion-2s.mp4"), &spec(None));
    let most = most_in(&packets(&out), 1.0);
    assert!(most > bound(1.0) * 1.5, "uncapped: {most:.0} kbit in 1 s");
    assert!(uncapped.renditions[0].peak_kbps > report.renditions[0].peak_kbps * 3);
}

#[test]
fn the_ladder_comes_from_one_decode_with_its_keyframes_aligned() {
    let (dir, out, report) = render(&fixture("landscape-1080p-12s.mp4"), &ladder());
    let sizes: Vec<(&str, u32, u32)> = report
        .renditions
        .iter()
        .map(|r| (r.name.as_str(), r.width, r.height))
        .collect();
    assert_eq!(sizes, [("720p", 1280, 720), ("360p", 640, 360), ("small", 426, 240)]);
    assert_eq!(report.renditions[0].path, out);
    let primary_keys = assert_closed_gops(&out, "720p");
    assert_eq!(primary_keys.len(), 3, "a keyframe every 2 s over 6 s: {primary_keys:?}");
    for r in &report.renditions[1..] {
        assert_eq!(r.path, dir.path().join("out").join(format!("{}.mp4", r.name)));
        let d = decode(&r.path);
        assert_eq!((d.width, d.height), (r.width, r.height), "{}", r.name);
        assert!((d.duration - 6.0).abs() < 0.05, "{}: {} s", r.name, d.duration);
        assert_eq!(
            assert_closed_gops(&r.path, &r.name),
            primary_keys,
            "{}'s keyframes",
            r.name
        );
        assert!(r.bytes < report.renditions[0].bytes / 2, "{r:?}");
    }
    // Everything written is listed, in the extras directory, nothing else.
    let mut on_disk = Vec::new();
    walk(&dir.path().join("out"), &mut on_disk);
    on_disk.sort();
    assert_eq!(on_disk, report.extras);
    assert_eq!(files_in(dir.path()), ["out", "out.jpg", "out.mp4"], "no partial files");
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// A media playlist as Python's `m3u8` parsed it.
#[derive(Debug, Deserialize)]
struct Variant {
    uri: String,
    bandwidth: u64,
    average_bandwidth: u64,
    resolution: (u32, u32),
    codecs: String,
    frame_rate: f64,
    init: String,
    segments: Vec<(String, f64)>,
}

/// Parses the master playlist and each media playlist with Python's `m3u8`
/// (the venv's), as a player would.
fn parse_hls(master: &Path) -> Vec<Variant> {
    let script = r#"
import json, os, sys, m3u8
master = m3u8.load(sys.argv[1])
assert master.is_variant, "not a master playlist"
out = []
for p in master.playlists:
    s = p.stream_info
    media = m3u8.load(os.path.join(os.path.dirname(sys.argv[1]), p.uri))
    assert media.is_endlist and media.playlist_type == "vod"
    out.append(dict(uri=p.uri, bandwidth=s.bandwidth, average_bandwidth=s.average_bandwidth,
                    resolution=list(s.resolution), codecs=s.codecs, frame_rate=s.frame_rate,
                    init=media.segment_map[0].uri,
                    segments=[[seg.uri, seg.duration] for seg in media.segments]))
print(json.dumps(out))
"#;
    let python = testkit::repo_root().join(".venv/bin/python");
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(master)
        .output()
        .expect("the venv's python runs (scripts/install-deps.sh)");
    assert!(out.status.success(), "m3u8: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

#[test]
fn the_hls_ladder_parses_and_every_segment_decodes() {
    let (_dir, _out, report) = render(&fixture("landscape-1080p-12s.mp4"), &ladder());
    let master = report.hls.as_deref().expect("HLS was asked for");
    let variants = parse_hls(master);
    let shown: Vec<(u32, u32)> = variants.iter().map(|v| v.resolution).collect();
    assert_eq!(shown, [(1280, 720), (640, 360), (426, 240)]);
    for v in &variants {
        assert!(v.codecs.starts_with("avc1.64"), "High profile: {v:?}");
        assert!((v.frame_rate - 30.0).abs() < 0.01);
        assert!(v.average_bandwidth <= v.bandwidth && v.average_bandwidth > 0, "{v:?}");
        let level = master.parent().expect("dir").join(&v.uri);
        let dir = level.parent().expect("level dir");
        assert_eq!(v.segments.len(), 3, "2 s segments over 6 s: {v:?}");
        for (uri, duration) in &v.segments {
            assert!((duration - 2.0).abs() < 0.01, "{uri}: {duration} s");
            // A player appends the segment to the init segment.
            let joined = dir.join(format!("{uri}.joined.mp4"));
            let bytes = [
                std::fs::read(dir.join(&v.init)).expect("init"),
                std::fs::read(dir.join(uri)).expect("seg"),
            ]
            .concat();
            std::fs::write(&joined, bytes).expect("write");
            let d = decode(&joined);
            assert_eq!(d.frames.len(), 60, "{}/{uri}", v.uri);
            assert!(d.frames[0].key, "{}/{uri} starts with a keyframe", v.uri);
            std::fs::remove_file(&joined).expect("remove");
        }
    }
    // The bandwidth the master playlist declares covers the real peak.
    let primary = &report.renditions[0];
    assert!(
        variants[0].bandwidth >= u64::from(primary.average_kbps) * 1000,
        "{variants:?}"
    );
}

#[test]
fn the_hls_ladder_plays_in_chromium_with_hls_js() {
    let (_dir, _out, report) = render(&fixture("landscape-1080p-12s.mp4"), &ladder());
    let hls_dir = report.hls.as_deref().and_then(Path::parent).expect("an HLS directory");
    let playback = testkit::browser::play_hls(hls_dir.to_str().expect("UTF-8"))
        .expect("the browser harness runs (scripts/install-deps.sh installs Chromium, Selenium and hls.js)");
    assert!(playback.error.is_none() && playback.ended, "{playback:#?}");
    let levels = playback.levels.as_ref().expect("levels");
    let sizes: Vec<(u32, u32)> = levels.iter().map(|l| (l.width, l.height)).collect();
    assert_eq!(
        sizes,
        [(426, 240), (640, 360), (1280, 720)],
        "hls.js sorts by bandwidth"
    );
    assert!(
        playback.frag_levels.contains(&0) && playback.frag_levels.contains(&2),
        "started low, switched to the top: {playback:#?}"
    );
    assert!((playback.duration.unwrap_or(0.0) - 6.0).abs() < 0.2, "{playback:#?}");
    // And the ladder's MP4s play as they are, as the platform embeds them.
    for r in &report.renditions[1..] {
        let mp4 = testkit::browser::play(r.path.to_str().expect("UTF-8"), None, None).expect("harness");
        mp4.assert_played_through();
        assert_eq!((mp4.video_width, mp4.video_height), (Some(r.width), Some(r.height)));
    }
}

#[test]
fn the_storyboard_covers_the_rendition_with_its_own_frames() {
    let spec = RenditionSpec {
        preset: "veryfast".into(),
        storyboard: true,
        ..RenditionSpec::default()
    };
    // Black for 1.5 s, then a fade in: thumbnails that differ with time.
    let (_dir, out, report) = render(&fixture("fade-in.mp4"), &spec);
    let sb = report.storyboard.clone().expect("a storyboard");
    assert_eq!((sb.thumbnail_width, sb.thumbnail_height, sb.interval), (160, 90, 1.0));
    let duration = report.duration.as_secs_f64();
    let sprite = picture_at(&sb.sprite, 0.0);
    let (sw, sh) = sprite.size();
    let text = std::fs::read_to_string(&sb.vtt).expect("vtt");
    assert!(text.starts_with("WEBVTT\n"), "{text}");
    let cues = cues(&text);
    assert_eq!(cues.len() as u32, sb.thumbnails);
    let mut expected_start = 0.0;
    let mut lumas = Vec::new();
    for (start, end, [x, y, w, h]) in &cues {
        assert!((start - expected_start).abs() < 1e-3, "a gap before {start}: {text}");
        assert!(end > start);
        expected_start = *end;
        assert!(x + w <= sw && y + h <= sh, "#xywh={x},{y},{w},{h} outside {sw}x{sh}");
        // The thumbnail is the rendition's frame at its cue (loosely: the
        // mean brightness, JPEG's full range brought to the video's).
        let thumb = sprite.mean_luma_in(*x, *y, *w, *h) * 219.0 / 255.0 + 16.0;
        let frame = picture_at(&out, *start).mean_luma();
        assert!(
            (thumb - frame).abs() < 8.0,
            "{start} s: thumbnail {thumb:.1}, frame {frame:.1}"
        );
        lumas.push(thumb);
    }
    assert!(
        (expected_start - duration).abs() < 1e-3,
        "the cues end at {expected_start}, not {duration}"
    );
    assert!(
        lumas[lumas.len() - 1] > lumas[0] + 40.0,
        "black start, bright end: {lumas:?}"
    );
}

/// Each cue's start, end and `#xywh`.
fn cues(vtt: &str) -> Vec<(f64, f64, [u32; 4])> {
    let secs = |t: &str| -> f64 {
        let parts: Vec<f64> = t.split(':').map(|p| p.parse().expect("a number")).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    let lines: Vec<&str> = vtt.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let (start, end) = w[0].split_once(" --> ")?;
            let xywh = w[1].split_once("#xywh=")?.1;
            let v: Vec<u32> = xywh.split(',').map(|n| n.parse().expect("a number")).collect();
            Some((secs(start), secs(end), [v[0], v[1], v[2], v[3]]))
        })
        .collect()
}

#[test]
fn what_a_local_run_writes_is_readable_by_others_under_the_umask() {
    let (dir, out, report) = render(&fixture("gray-720p.mp4"), &ladder());
    let umask = current_umask();
    let mut files = report.extras.clone();
    files.push(out);
    files.extend(report.poster.clone());
    for f in files.iter().chain(std::iter::once(&dir.path().join("out"))) {
        let mode = std::fs::metadata(f).expect("metadata").permissions().mode() & 0o777;
        let want = if f.is_dir() { 0o777 } else { 0o666 } & !umask;
        assert_eq!(mode, want, "{}: {mode:o} under umask {umask:o}", f.display());
    }
}

/// The process's umask (read by setting it, and set back at once).
fn current_umask() -> u32 {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.as_raw_mode()
}

//! A rendition played in a real headless Chromium, as a viewer plays it.
//!
//! [`play`] runs `browser.py` (in this crate) with the venv's Python: it
//! serves a page on 127.0.0.1 with an HTTP server that answers byte ranges
//! as S3 does, and drives Debian's `chromium` through `chromium-driver` with
//! Selenium: play, playback past 0.5 s, seeks to 37 % and 71 % of the
//! duration and to the last second, each followed by playback, then
//! `ended`. What the page saw comes back as a [`Playback`].

use std::env;
use std::io;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

use crate::repo_root;

/// One step of the scenario: where the player was once it had played on.
#[derive(Clone, Debug, Deserialize)]
pub struct Step {
    /// `play`, `seek 37 %`, `seek 71 %` or `seek last second`.
    pub step: String,
    /// The time it was asked to reach, in seconds.
    pub target: f64,
    /// `currentTime` once playback went on from there.
    pub reached: f64,
    /// The RGBA of the requested pixel as Chromium drew the frame; `None`
    /// when no pixel was asked for, or the video is on another origin that
    /// does not allow CORS.
    pub pixel: Option<[u8; 4]>,
    /// Frames Chromium decoded so far.
    pub frames: Option<u64>,
}

/// The poster as an `<img>` loaded it.
#[derive(Clone, Debug, Deserialize)]
pub struct PosterLoad {
    /// `naturalWidth`.
    pub width: u32,
    /// `naturalHeight`.
    pub height: u32,
    /// Why it did not load, if it did not.
    pub error: Option<String>,
}

/// What the page saw.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Playback {
    /// The video given.
    pub video: String,
    /// `videoWidth`, once the metadata loaded.
    pub video_width: Option<u32>,
    /// `videoHeight`, once the metadata loaded.
    pub video_height: Option<u32>,
    /// `duration`, in seconds.
    pub duration: Option<f64>,
    /// The steps completed, in order.
    pub steps: Vec<Step>,
    /// Whether playback reached `ended`.
    pub ended: bool,
    /// The `MediaError` (Chromium's own message) or the step that timed
    /// out, if any.
    pub error: Option<String>,
    /// The poster, if one was given.
    pub poster: Option<PosterLoad>,
}

impl Playback {
    /// Panics with everything the page saw unless the video played, was
    /// seeked three times and played to its end without an error.
    #[track_caller]
    pub fn assert_played_through(&self) {
        assert!(
            self.error.is_none() && self.ended && self.steps.len() == 4,
            "{}: playback failed in Chromium: {}\n{self:#?}",
            self.video,
            self.error.as_deref().unwrap_or("did not reach the end")
        );
    }
}

/// A level of an HLS master playlist, as hls.js parsed it.
#[derive(Clone, Debug, Deserialize)]
pub struct Level {
    /// `RESOLUTION`'s width.
    pub width: u32,
    /// `RESOLUTION`'s height.
    pub height: u32,
    /// `BANDWIDTH`.
    pub bitrate: u64,
    /// The video codec from `CODECS`.
    pub codecs: Option<String>,
}

/// What hls.js saw playing a ladder.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HlsPlayback {
    /// The master playlist given.
    pub video: String,
    /// The levels the master playlist declared, lowest first.
    pub levels: Option<Vec<Level>>,
    /// The levels fragments were loaded from.
    pub frag_levels: Vec<usize>,
    /// Whether playback reached `ended`.
    pub ended: bool,
    /// `duration` at the end, in seconds.
    pub duration: Option<f64>,
    /// hls.js's fatal error, a `MediaError` or the step that timed out.
    pub error: Option<String>,
}

/// Plays the HLS ladder under `master` (a local directory holding
/// `master.m3u8`, or the playlist's `http://` URL) with hls.js in headless
/// Chromium: from the lowest level, switched to the highest after a
/// second, to the end.
pub fn play_hls(master: &str) -> io::Result<HlsPlayback> {
    let venv = venv();
    let hls_js = env::var_os("VIDWORKER_HLS_JS").map_or_else(|| venv.join("share/hls.js/hls.min.js"), PathBuf::from);
    if !hls_js.is_file() {
        return Err(io::Error::other(format!(
            "{} is missing: run scripts/install-deps.sh",
            hls_js.display()
        )));
    }
    let mut cmd = Command::new(venv.join("bin").join("python"));
    cmd.arg(script()).arg("--hls").arg(master).arg("--hls-js").arg(&hls_js);
    run(cmd)
}

fn venv() -> PathBuf {
    env::var_os("VIDWORKER_VENV").map_or_else(|| repo_root().join(".venv"), PathBuf::from)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser.py")
}

/// Runs browser.py and reads its one JSON result.
fn run<T: serde::de::DeserializeOwned>(mut cmd: Command) -> io::Result<T> {
    let out = cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {:?}: {e} (run scripts/install-deps.sh)", cmd.get_program()),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "browser.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        io::Error::other(format!(
            "browser.py printed no result ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// Plays `video` (a local path, or an `http://` URL such as a moto S3
/// object) in headless Chromium; `poster` likewise; `pixel` is read from the
/// frame at every step when the video is served from the page's origin.
///
/// Fails only when the harness cannot run (no Chromium, no Selenium: run
/// `scripts/install-deps.sh`); a video that does not play is a [`Playback`]
/// with an `error`.
pub fn play(video: &str, poster: Option<&str>, pixel: Option<(u32, u32)>) -> io::Result<Playback> {
    let mut cmd = Command::new(venv().join("bin").join("python"));
    cmd.arg(script()).arg("--video").arg(video);
    if let Some(poster) = poster {
        cmd.arg("--poster").arg(poster);
    }
    if let Some((x, y)) = pixel {
        cmd.arg("--pixel").arg(format!("{x},{y}"));
    }
    run(cmd)
}

//! Known attack shapes on media pipelines, each built here: vidworker
//! refuses them with one clear line and opens no file but its input (an
//! inotify watch on the directory sees every open). As a control, the
//! ffmpeg command line is shown to read the neighbouring file when handed
//! the same playlist or script.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hostile::*;
use processor::{CancelFlag, Error, ErrorClass, RenditionSpec};

/// A directory holding a neighbouring video and a canary, watched.
struct Scene {
    dir: tempfile::TempDir,
    out: tempfile::TempDir,
    watch: OpenWatch,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().expect("dir");
        fs::copy(crate::common::fixture("gray-720p.mp4"), dir.path().join("secret.mp4")).expect("copy");
        fs::write(dir.path().join("canary.txt"), "VIDWORKER-CANARY-7f3a\n").expect("canary");
        let watch = OpenWatch::new(dir.path());
        Scene {
            dir,
            out: tempfile::tempdir().expect("out dir"),
            watch,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` as `name`, runs probe and process on it, and returns
    /// the process error. Asserts that both refuse it, that nothing but the
    /// input was opened, and that nothing was written.
    fn refuse(&self, name: &str, bytes: &[u8]) -> Error {
        self.refuse_with(name, bytes, true)
    }

    /// Like `refuse`, for inputs whose headers are fine (probe may describe
    /// them) but whose pictures are not.
    fn refuse_with(&self, name: &str, bytes: &[u8], probe_refuses: bool) -> Error {
        let input = self.path(name);
        fs::write(&input, bytes).expect("write input");
        let _ = self.watch.opened();
        let probe = processor::probe(&input);
        let out = self.out.path().join("out.mp4");
        let result = processor::process(&input, &out, &RenditionSpec::default(), |_| {}, &CancelFlag::new());
        let opened = self.watch.opened();
        assert_eq!(opened, vec![name.to_owned()], "{name}: only the input may be opened");
        assert!(!probe_refuses || probe.is_err(), "{name}: probe accepted it");
        let err = match result {
            Ok(r) => panic!("{name} was processed: {r:?}"),
            Err(e) => e,
        };
        assert_eq!(err.class(), ErrorClass::Input, "{name}: {err}");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg:?}");
        assert!(msg.starts_with(&input.display().to_string()), "{msg}");
        assert_eq!(
            fs::read_dir(self.out.path()).expect("out").count(),
            0,
            "nothing written"
        );
        err
    }
}

fn hls(target: &str) -> Vec<u8> {
    format!("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{target}\n#EXT-X-ENDLIST\n")
        .into_bytes()
}

fn ffconcat(target: &str) -> Vec<u8> {
    format!("ffconcat version 1.0\nfile '{target}'\n").into_bytes()
}

#[test]
fn hls_playlists_named_mp4_are_refused_and_read_nothing() {
    let s = Scene::new();
    let secret = s.path("secret.mp4").display().to_string();
    let canary = s.path("canary.txt").display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("neighbour.mp4", hls("secret.mp4")),
        ("absolute.mp4", hls(&format!("file://{secret}"))),
        ("passwd.mp4", hls("/etc/passwd")),
        ("canary.mov", hls(&canary)),
        ("url.mp4", hls("http://169.254.169.254/latest/meta-data/")),
        ("bom.mp4", [b"\xEF\xBB\xBF\n\n".as_slice(), &hls("secret.mp4")].concat()),
    ];
    for (name, bytes) in cases {
        let err = s.refuse(name, &bytes);
        assert_eq!(err.kind(), "refused", "{name}: {err}");
        assert!(err.to_string().contains("HLS"), "{err}");
    }
}

#[test]
fn ffconcat_scripts_named_mp4_are_refused_and_read_nothing() {
    let s = Scene::new();
    for (name, target) in [
        ("concat.mp4", "secret.mp4".to_owned()),
        ("passwd.mp4", "/etc/passwd".to_owned()),
        ("canary.mkv", s.path("canary.txt").display().to_string()),
    ] {
        let err = s.refuse(name, &ffconcat(&target));
        assert_eq!(err.kind(), "refused", "{name}: {err}");
        assert!(err.to_string().contains("ffconcat"), "{err}");
    }
}

#[test]
fn the_ffmpeg_cli_does_read_the_neighbouring_file_given_the_same_inputs() {
    // The control that shows the inputs above are real attacks.
    let Ok(out) = Command::new("ffmpeg").arg("-version").output() else {
        panic!("the ffmpeg CLI is needed for this control; scripts/install-deps.sh installs it");
    };
    assert!(out.status.success());
    let s = Scene::new();
    for (name, bytes) in [
        ("playlist.mp4", hls("secret.mp4")),
        ("script.mp4", ffconcat("secret.mp4")),
    ] {
        let input = s.path(name);
        fs::write(&input, bytes).expect("write");
        let _ = s.watch.opened();
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "quiet", "-i"])
            .arg(&input)
            .args(["-frames:v", "1", "-f", "null", "-"])
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "{name}");
        let opened = s.watch.opened();
        assert!(
            opened.contains(&"secret.mp4".to_owned()),
            "{name}: ffmpeg opened {opened:?}"
        );
    }
}

#[test]
fn an_avi_smuggling_a_playlist_in_a_gab2_subtitle_is_refused() {
    let s = Scene::new();
    let picture = jpeg(64, 64);
    // The builder makes real AVIs: without the subtitle, it plays.
    let plain = s.path("plain.avi");
    fs::write(&plain, avi(&picture, 10, 64, 64, None)).expect("write");
    let out = s.out.path().join("plain.mp4");
    let report = processor::process(&plain, &out, &RenditionSpec::default(), |_| {}, &CancelFlag::new())
        .expect("a plain MJPEG AVI is processed");
    assert_eq!(report.frames, 10);
    fs::remove_file(&out).expect("clean");
    // The default rendition has a poster beside it.
    fs::remove_file(report.poster.expect("a poster")).expect("clean");

    // HackerOne #242831: the subtitle chunk carries an HLS playlist that
    // pulls in local files.
    let canary = s.path("canary.txt").display().to_string();
    let playlist = hls(&format!("file://{canary}"));
    let err = s.refuse("gab2.avi", &avi(&picture, 10, 64, 64, Some(&gab2(&playlist))));
    assert_eq!(err.kind(), "refused", "{err}");
    assert!(err.to_string().contains("subtitle"), "{err}");
}

#[test]
fn a_header_declaring_60000x60000_is_refused_before_any_picture_is_allocated() {
    let s = Scene::new();
    let picture = jpeg(64, 64);
    // The container declares the bomb.
    let err = s.refuse("bomb.avi", &avi(&picture, 3, 60_000, 60_000, None));
    assert_eq!(err.kind(), "limit_exceeded", "{err}");
    assert!(err.to_string().contains("60000x60000"), "{err}");
    // The picture itself declares it, behind a modest container header.
    let bomb = jpeg_with_declared_size(picture, 60_000, 60_000);
    let err = s.refuse_with("inner-bomb.avi", &avi(&bomb, 3, 64, 64, None), false);
    assert!(matches!(err.kind(), "limit_exceeded" | "corrupt"), "{err}");
}

#[test]
fn other_scripts_and_random_bytes_are_refused_and_read_nothing() {
    let s = Scene::new();
    let sdp = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    let err = s.refuse("stream.mp4", sdp);
    assert!(matches!(err.kind(), "refused" | "not_media"), "{err}");
    let err = s.refuse(
        "passwd.mp4",
        &fs::read("/etc/passwd").unwrap_or_else(|_| b"root:x:0:0::/root:/bin/sh\n".to_vec()),
    );
    assert!(matches!(err.kind(), "refused" | "not_media"), "{err}");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let err = s.refuse("noise.mp4", &noise);
    assert_eq!(err.kind(), "not_media", "{err}");
}

#[test]
fn the_watch_sees_opens_so_these_tests_can_fail() {
    let s = Scene::new();
    let _ = fs::read(s.path("canary.txt")).expect("read");
    assert_eq!(s.watch.opened(), vec!["canary.txt".to_owned()]);
    assert!(Path::new(&s.path("secret.mp4")).exists());
}

#[test]
fn a_good_upload_opens_nothing_but_itself_while_rendition_and_poster_are_made() {
    let s = Scene::new();
    let input = s.path("clip.mp4");
    fs::copy(crate::common::fixture("portrait-rotated.mp4"), &input).expect("copy");
    let _ = s.watch.opened();
    let out = s.out.path().join("clip.mp4");
    let report =
        processor::process(&input, &out, &RenditionSpec::default(), |_| {}, &CancelFlag::new()).expect("processes");
    assert_eq!(
        s.watch.opened(),
        vec!["clip.mp4".to_owned()],
        "one open of the input, no second decode"
    );
    assert!(report.poster.expect("a poster").is_file());
}

//! The rendition's only consumer is a browser: each case is rendered with
//! the product's defaults and played in headless Chromium (Debian's
//! `chromium`, driven through `chromium-driver`), served with byte ranges
//! as S3 serves it. The page plays it, seeks to 37 % and 71 % of its length
//! and to its last second, and plays on to the end after each seek; any
//! `MediaError` fails the test with Chromium's own message. The poster is
//! loaded in an `<img>`.

use std::path::Path;

use crate::common::*;
use processor::{Card, RenditionSpec};
use testkit::browser::{self, Playback};

/// The default watermark's opaque orange test point (see rendition.rs),
/// the logo's orange there, and the watermark's opacity.
const WM_POINT: (u32, u32) = (1128 + 38, 568 + 38);
const LOGO_ORANGE: [u8; 3] = [242, 107, 29];
const OPACITY: f64 = 0.85;

/// Renders `input` with `spec` and plays the rendition and its poster.
fn render_and_play(input: &str, spec: &RenditionSpec) -> Playback {
    let (_dir, out, report) = render(&fixture(input), spec);
    let poster = report.poster.as_deref().expect("the default spec makes a poster");
    let playback = play(&out, poster);
    assert_eq!(
        (playback.video_width, playback.video_height),
        (Some(1280), Some(720)),
        "{input}: the size Chromium shows"
    );
    let duration = playback.duration.expect("a duration");
    assert!(
        (duration - report.duration.as_secs_f64()).abs() < 0.1,
        "{input}: Chromium says {duration} s, the rendition is {:?}",
        report.duration
    );
    playback.assert_played_through();
    let poster = playback.poster.as_ref().expect("the poster was tried");
    assert_eq!(
        (poster.width, poster.height, poster.error.as_deref()),
        (1280, 720, None),
        "{input}: the poster as an <img> loads it"
    );
    playback
}

fn play(video: &Path, poster: &Path) -> Playback {
    let as_str = |p: &Path| p.to_str().expect("a UTF-8 path").to_owned();
    browser::play(&as_str(video), Some(&as_str(poster)), Some(WM_POINT))
        .expect("the browser harness runs (scripts/install-deps.sh installs Chromium and Selenium)")
}

/// The watermark as Chromium drew it at a step that shows the main video.
#[track_caller]
fn assert_watermark_at(playback: &Playback, step: &str) {
    let s = playback
        .steps
        .iter()
        .find(|s| s.step == step)
        .expect("the step was played");
    let [r, g, b, _] = s.pixel.expect("the pixel was read back");
    // The logo's orange at 85 % over whatever moves beneath it: each
    // channel between 85 % of the orange's and that plus 15 % of white,
    // give or take the browser's colour conversion.
    let inside = [r, g, b].iter().zip(LOGO_ORANGE).all(|(&got, c)| {
        let low = OPACITY * f64::from(c);
        let high = low + (1.0 - OPACITY) * 255.0;
        (low - 8.0..=high + 8.0).contains(&f64::from(got))
    });
    assert!(
        inside,
        "the watermark after the {step}: got {:?}, want the logo's orange {LOGO_ORANGE:?} at {OPACITY} opacity",
        [r, g, b]
    );
}

#[test]
fn a_12_s_1080p_upload_plays_and_seeks_to_the_end() {
    let p = render_and_play("landscape-1080p-12s.mp4", &RenditionSpec::default());
    assert!(p.steps.iter().any(|s| s.step == "seek last second" && s.target > 10.9));
    assert_watermark_at(&p, "seek 37 %");
    assert_watermark_at(&p, "seek 71 %");
}

#[test]
fn a_portrait_phone_clip_plays_and_seeks_to_the_end() {
    let p = render_and_play("portrait-phone-8s.mp4", &RenditionSpec::default());
    assert_watermark_at(&p, "seek 71 %");
}

#[test]
fn a_10_bit_hdr_clip_plays_and_seeks_to_the_end() {
    // No watermark pixel here: beneath it the tone-mapped pattern is a
    // saturated cyan outside the RGB cube (Y'CbCr 135, 194, 1), so the
    // 15 % that shows through pulls the blend below the bounds used above.
    // The watermark's colour is checked on a flat background in
    // rendition.rs.
    render_and_play("hdr-pq-6s.mov", &RenditionSpec::default());
}

#[test]
fn a_clip_with_intro_and_outro_cards_plays_and_seeks_to_the_end() {
    let spec = RenditionSpec {
        intro: Some(Card::logo()),
        outro: Some(Card::logo()),
        ..RenditionSpec::default()
    };
    let p = render_and_play("landscape-1080p-12s.mp4", &spec);
    // 2.5 s + 12 s + 2.5 s: both middle seeks land in the main video.
    assert!((p.duration.expect("duration") - 17.0).abs() < 0.1);
    assert_watermark_at(&p, "seek 37 %");
    assert_watermark_at(&p, "seek 71 %");
}

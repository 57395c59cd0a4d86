//! What a rendition looks like ([`RenditionSpec`]) and how much an input may
//! cost ([`Limits`]). Defaults are the product's: 30 s, 1280x720 letterboxed,
//! the league logo in the bottom-right corner, no audio, H.264 CRF 23.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::geom::CardSlot;
use crate::ladder::{RateCap, Rung};

/// The longest an intro or outro card may last.
pub const MAX_CARD: Duration = Duration::from_millis(2500);
/// The longest the intro and outro may last together.
pub const MAX_CARDS_TOTAL: Duration = Duration::from_secs(5);

/// How the picture is fitted into the output frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fit {
    /// Scale the whole picture inside the frame and fill the rest with black
    /// bars (letterbox or pillarbox). Nothing is cropped.
    #[default]
    Pad,
    /// Scale the picture to cover the frame and crop what overflows.
    Fill,
}

/// A corner of the frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Corner {
    /// Top left.
    TopLeft,
    /// Top right.
    TopRight,
    /// Bottom left.
    BottomLeft,
    /// Bottom right.
    #[default]
    BottomRight,
}

/// A still image used as watermark or card.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Image {
    /// The league logo built into the library (a 512x512 PNG with alpha).
    #[default]
    Logo,
    /// A PNG file of the operator's.
    Png(PathBuf),
}

/// The watermark drawn over the main video (not over cards).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    /// The picture; its alpha channel is respected.
    pub image: Image,
    /// Where it sits.
    pub corner: Corner,
    /// Distance from both edges of its corner, in output pixels.
    pub margin: u32,
    /// Its width as a fraction of the output width (the height follows the
    /// image's aspect ratio).
    pub width_fraction: f32,
    /// 0.0 (invisible) to 1.0 (as opaque as the image itself).
    pub opacity: f32,
}

impl Default for Watermark {
    fn default() -> Self {
        Watermark {
            image: Image::Logo,
            corner: Corner::BottomRight,
            margin: 24,
            width_fraction: 0.10,
            opacity: 0.85,
        }
    }
}

/// What an intro or outro card shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardContent {
    /// The image centred on black. [`Image::Logo`] gives the league card.
    Image(Image),
    /// A short clip, fitted like the main video and cut to the card's
    /// duration. Its audio is not used.
    Clip(PathBuf),
}

/// An intro or outro card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// What it shows.
    pub content: CardContent,
    /// How long it lasts; at most [`MAX_CARD`]. A clip shorter than this
    /// lasts as long as the clip.
    pub duration: Duration,
}

impl Card {
    /// The league logo on black for the longest allowed time.
    pub fn logo() -> Self {
        Card {
            content: CardContent::Image(Image::Logo),
            duration: MAX_CARD,
        }
    }
}

/// Resource limits that protect a worker from hostile or absurd uploads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest input file accepted, in bytes.
    pub max_input_bytes: u64,
    /// Largest picture accepted, in pixels per frame (width x height).
    pub max_pixels: u64,
    /// Most streams a container may declare.
    pub max_streams: u32,
    /// Wall-clock budget for one `probe` or `process` call; `None` for none.
    pub timeout: Option<Duration>,
    /// How many bytes FFmpeg may read to identify the streams.
    pub probe_bytes: u64,
    /// How much media time FFmpeg may read to identify the streams.
    pub probe_duration: Duration,
}

impl Limits {
    fn validate(&self) -> Result<()> {
        if self.max_input_bytes == 0 || self.max_pixels == 0 || self.max_streams == 0 {
            return invalid("limits must be above zero".to_owned());
        }
        if self.probe_bytes < 32 << 10 {
            return invalid(format!(
                "probe size {} bytes is too small to identify a file (at least 32 KiB)",
                self.probe_bytes
            ));
        }
        Ok(())
    }
}

/// A spec problem, in words an operator understands.
fn invalid(msg: String) -> Result<()> {
    Err(Error::InvalidSpec(msg))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A 10-minute 4K phone clip is about 4 GB; anything larger is
            // not a showcase upload.
            max_input_bytes: 4 << 30,
            // 8K (7680x4320 = 33.2 Mpx) with a little room; 16K is refused.
            max_pixels: 40_000_000,
            // Phones write 2 to 6 (video, audio, metadata, timecode).
            max_streams: 32,
            timeout: Some(Duration::from_secs(600)),
            probe_bytes: 16 << 20,
            probe_duration: Duration::from_secs(10),
        }
    }
}

/// Everything that decides how a rendition looks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenditionSpec {
    /// The main video is cut to at most this long, counted from its first
    /// frame. Cards come on top.
    pub max_duration: Duration,
    /// Output width in pixels (even).
    pub width: u32,
    /// Output height in pixels (even).
    pub height: u32,
    /// Letterbox (default) or crop to fill.
    pub fit: Fit,
    /// The watermark; `None` for none.
    pub watermark: Option<Watermark>,
    /// A card before the video.
    pub intro: Option<Card>,
    /// A card after the video.
    pub outro: Option<Card>,
    /// Keep the audio (re-encoded as AAC stereo 128 kb/s). Off by default.
    pub keep_audio: bool,
    /// The libx264 preset (`ultrafast` … `veryslow`).
    pub preset: String,
    /// The libx264 constant rate factor, 0 (lossless) to 51.
    pub crf: u8,
    /// Further libx264 settings over the preset's, `key=value` pairs
    /// joined by `:` as in x264's `--x264-params` (only the tuning keys of
    /// [`X264_TUNING_KEYS`]: nothing that changes keyframes, the rate cap
    /// or the profile); empty for the preset's own.
    pub x264_params: String,
    /// The output frame rate is the source's, reduced below this cap by an
    /// integer factor (59.94 becomes 29.97, 120 becomes 30).
    pub max_fps: u32,
    /// The longest interval between two keyframes.
    pub keyframe_interval: Duration,
    /// How many cores the job may use; 0: all of them (FFmpeg's and x264's
    /// automatic thread counts). x264 gets 1.5 threads per core, as its
    /// own automatic count does; the filter graph and a heavy source's
    /// decoder one per core (up to 1080p30 H.264 decodes on one thread:
    /// see `transcode::source`).
    pub threads: u32,
    /// Also write a poster: a JPEG of one frame of the rendition (see
    /// [`process`](crate::process)).
    pub poster: bool,
    /// The rendition's rate cap (x264 VBV on top of CRF); `None` for an
    /// uncapped CRF stream.
    pub cap: Option<RateCap>,
    /// Further renditions from the same decode, each its own MP4 (and HLS
    /// level), keyframes aligned with this one's.
    pub ladder: Vec<Rung>,
    /// Also write HLS: fMP4 segments of `keyframe_interval`, a media
    /// playlist per rendition and a master playlist.
    pub hls: bool,
    /// Also write a storyboard: a JPEG sprite of thumbnails and a WebVTT
    /// file pointing into it.
    pub storyboard: bool,
    /// Resource limits for the input.
    pub limits: Limits,
}

impl Default for RenditionSpec {
    fn default() -> Self {
        RenditionSpec {
            max_duration: Duration::from_secs(30),
            width: 1280,
            height: 720,
            fit: Fit::Pad,
            watermark: Some(Watermark::default()),
            intro: None,
            outro: None,
            keep_audio: false,
            preset: "medium".to_owned(),
            crf: 23,
            x264_params: String::new(),
            max_fps: 30,
            keyframe_interval: Duration::from_secs(2),
            threads: 0,
            poster: true,
            cap: Some(crate::ladder::default_cap(1280, 720)),
            ladder: Vec::new(),
            hls: false,
            storyboard: false,
            limits: Limits::default(),
        }
    }
}

/// The x264 settings `x264_params` may change: motion search, reference
/// frames, B-frames, partitions, quantisation and psychovisual tuning.
/// Keyframes, scene cuts, GOPs, rate control, VBV, threads and the profile
/// are the processor's: players depend on them.
pub const X264_TUNING_KEYS: &[&str] = &[
    "subme",
    "me",
    "merange",
    "ref",
    "mixed-refs",
    "trellis",
    "b-adapt",
    "bframes",
    "b-pyramid",
    "direct",
    "weightb",
    "weightp",
    "partitions",
    "8x8dct",
    "rc-lookahead",
    "mbtree",
    "aq-mode",
    "aq-strength",
    "psy",
    "psy-rd",
    "fast-pskip",
    "dct-decimate",
    "deblock",
    "chroma-me",
];

/// Checks `x264_params`: `key=value` pairs of tuning keys, values of
/// letters, digits and `.,+-`.
fn check_x264_params(params: &str) -> std::result::Result<(), String> {
    for pair in params.split(':').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("x264 setting {pair:?} is not key=value"))?;
        if !X264_TUNING_KEYS.contains(&key) {
            return Err(format!(
                "x264 setting {key:?} cannot be changed (only {})",
                X264_TUNING_KEYS.join(", ")
            ));
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || ".,+-".contains(c);
        if value.is_empty() || !value.chars().all(plain) {
            return Err(format!("x264 setting {key}={value:?} has an unusable value"));
        }
    }
    Ok(())
}

/// The x264 presets, fastest first.
pub const PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

impl RenditionSpec {
    /// Checks every field and returns the first problem found, in words an
    /// operator understands. Asset files (watermark, cards) are checked when
    /// they are loaded.
    pub fn validate(&self) -> Result<()> {
        self.validate_picture()?;
        self.validate_encoding()?;
        if let Some(w) = &self.watermark {
            self.validate_watermark(w)?;
        }
        self.validate_cards()?;
        self.validate_ladder()?;
        self.limits.validate()
    }

    /// The primary rendition's name in a ladder: its height (`720p`).
    pub fn name(&self) -> String {
        format!("{}p", self.height)
    }

    /// Whether the renditions' keyframes must fall on the same frames
    /// (a ladder, HLS): then every rendition gets one exactly every
    /// `keyframe_interval`, and none at scene cuts.
    pub fn aligned_keyframes(&self) -> bool {
        self.hls || !self.ladder.is_empty()
    }

    fn validate_ladder(&self) -> Result<()> {
        let primary = self.name();
        crate::ladder::check_cap(&primary, self.cap).or_else(invalid)?;
        if self.ladder.len() > crate::ladder::MAX_RUNGS {
            return invalid(format!(
                "{} further renditions is more than {}",
                self.ladder.len(),
                crate::ladder::MAX_RUNGS
            ));
        }
        if self.keep_audio && self.aligned_keyframes() {
            return invalid("audio is kept only in a single MP4 rendition, without a ladder or HLS".into());
        }
        let mut names = vec![primary.clone()];
        for rung in &self.ladder {
            if !crate::ladder::good_name(&rung.name) || names.contains(&rung.name) {
                return invalid(format!(
                    "rendition name {:?} must be unique, lowercase letters and digits (the primary is {primary})",
                    rung.name
                ));
            }
            names.push(rung.name.clone());
            if rung.width < 16 || rung.height < 16 || rung.width > self.width || rung.height > self.height {
                return invalid(format!(
                    "rendition {}: {}x{} must be from 16x16 up to the primary's {}x{}",
                    rung.name, rung.width, rung.height, self.width, self.height
                ));
            }
            if !rung.width.is_multiple_of(2) || !rung.height.is_multiple_of(2) {
                return invalid(format!(
                    "rendition {}: {}x{} must be even for 4:2:0 video",
                    rung.name, rung.width, rung.height
                ));
            }
            if rung.crf > 51 {
                return invalid(format!("rendition {}: crf {} is outside 0 to 51", rung.name, rung.crf));
            }
            crate::ladder::check_cap(&rung.name, rung.cap).or_else(invalid)?;
        }
        Ok(())
    }

    fn validate_picture(&self) -> Result<()> {
        if !(16..=7680).contains(&self.width) || !(16..=4320).contains(&self.height) {
            return invalid(format!(
                "output size {}x{} is outside 16x16 to 7680x4320",
                self.width, self.height
            ));
        }
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return invalid(format!(
                "output size {}x{} must be even for 4:2:0 video",
                self.width, self.height
            ));
        }
        if self.max_duration.is_zero() || self.max_duration > Duration::from_secs(6 * 3600) {
            return invalid(format!(
                "max duration {:?} must be above zero and at most 6 hours",
                self.max_duration
            ));
        }
        if !(1..=120).contains(&self.max_fps) {
            return invalid(format!("max fps {} is outside 1 to 120", self.max_fps));
        }
        Ok(())
    }

    fn validate_encoding(&self) -> Result<()> {
        if !PRESETS.contains(&self.preset.as_str()) {
            return invalid(format!(
                "unknown x264 preset {:?} (one of {})",
                self.preset,
                PRESETS.join(", ")
            ));
        }
        if self.crf > 51 {
            return invalid(format!("crf {} is outside 0 to 51", self.crf));
        }
        check_x264_params(&self.x264_params).or_else(invalid)?;
        if self.keyframe_interval < Duration::from_millis(100) || self.keyframe_interval > Duration::from_secs(20) {
            return invalid(format!(
                "keyframe interval {:?} is outside 0.1 to 20 s",
                self.keyframe_interval
            ));
        }
        if self.threads > 64 {
            return invalid(format!("{} threads is more than 64", self.threads));
        }
        Ok(())
    }

    fn validate_watermark(&self, w: &Watermark) -> Result<()> {
        if !(w.width_fraction > 0.0 && w.width_fraction <= 1.0) {
            return invalid(format!(
                "watermark width {} must be a fraction of the frame in (0, 1]",
                w.width_fraction
            ));
        }
        if !(0.0..=1.0).contains(&w.opacity) {
            return invalid(format!("watermark opacity {} is outside 0 to 1", w.opacity));
        }
        if w.margin >= self.width.min(self.height) / 2 {
            return invalid(format!(
                "watermark margin {} px leaves no room in a {}x{} frame",
                w.margin, self.width, self.height
            ));
        }
        Ok(())
    }

    fn validate_cards(&self) -> Result<()> {
        let mut total = Duration::ZERO;
        for (name, card) in [("intro", &self.intro), ("outro", &self.outro)] {
            let Some(card) = card else { continue };
            if card.duration.is_zero() || card.duration > MAX_CARD {
                return invalid(format!(
                    "{name} lasts {:.2} s; a card lasts more than 0 and at most {:.1} s",
                    card.duration.as_secs_f64(),
                    MAX_CARD.as_secs_f64()
                ));
            }
            total += card.duration;
        }
        if total > MAX_CARDS_TOTAL {
            return invalid(format!(
                "intro and outro last {:.2} s together; at most {:.1} s",
                total.as_secs_f64(),
                MAX_CARDS_TOTAL.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// One of the cards, if the rendition has it.
    pub(crate) fn card(&self, slot: CardSlot) -> Option<&Card> {
        match slot {
            CardSlot::Intro => self.intro.as_ref(),
            CardSlot::Outro => self.outro.as_ref(),
        }
    }

    /// The longest output this spec can produce: the main video at its cap
    /// plus both cards.
    pub fn max_output_duration(&self) -> Duration {
        let cards = [&self.intro, &self.outro]
            .into_iter()
            .flatten()
            .map(|c| c.duration)
            .sum::<Duration>();
        self.max_duration + cards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_product() {
        let spec = RenditionSpec::default();
        spec.validate().expect("defaults validate");
        assert_eq!((spec.width, spec.height), (1280, 720));
        assert_eq!(spec.max_duration, Duration::from_secs(30));
        assert!(!spec.keep_audio);
        assert!(spec.intro.is_none() && spec.outro.is_none());
        assert_eq!((spec.preset.as_str(), spec.crf), ("medium", 23));
    }

    #[test]
    fn cards_over_budget_are_refused_with_the_reason() {
        let long = Card {
            content: CardContent::Image(Image::Logo),
            duration: Duration::from_secs(3),
        };
        let spec = RenditionSpec {
            intro: Some(long),
            ..RenditionSpec::default()
        };
        let err = spec.validate().expect_err("3 s intro is refused");
        assert!(err.to_string().contains("intro lasts 3.00 s"), "{err}");

        let spec = RenditionSpec {
            intro: Some(Card::logo()),
            outro: Some(Card::logo()),
            ..RenditionSpec::default()
        };
        spec.validate().expect("2 x 2.5 s is allowed");
        assert_eq!(spec.max_output_duration(), Duration::from_secs(35));
    }

    #[test]
    fn odd_sizes_and_unknown_presets_are_refused() {
        let odd = RenditionSpec {
            width: 1279,
            ..RenditionSpec::default()
        };
        assert!(odd.validate().is_err());
        let preset = RenditionSpec {
            preset: "warp".into(),
            ..RenditionSpec::default()
        };
        let err = preset.validate().expect_err("unknown preset");
        assert!(err.to_string().contains("unknown x264 preset \"warp\""), "{err}");
        assert_eq!(err.class(), crate::ErrorClass::Spec);
    }

    #[test]
    fn only_tuning_settings_of_x264_can_be_changed() {
        let with = |params: &str| RenditionSpec {
            x264_params: params.into(),
            ..RenditionSpec::default()
        };
        assert!(with("subme=6:ref=2:psy-rd=1.0,0.15:me=hex").validate().is_ok());
        for (params, says) in [
            ("keyint=600", "\"keyint\" cannot be changed"),
            ("scenecut=40", "\"scenecut\" cannot be changed"),
            ("open-gop=1", "cannot be changed"),
            ("vbv-maxrate=99999", "cannot be changed"),
            ("subme", "is not key=value"),
            ("ref=2;rm -rf", "unusable value"),
            ("ref=", "unusable value"),
        ] {
            let err = with(params).validate().expect_err(params);
            assert!(err.to_string().contains(says), "{params}: {err}");
        }
    }

    #[test]
    fn a_ladder_is_refused_with_a_reason_naming_the_rendition() {
        let with = |ladder: Vec<crate::Rung>, keep_audio: bool| RenditionSpec {
            ladder,
            keep_audio,
            ..RenditionSpec::default()
        };
        let rung = |s: &str| crate::Rung::parse(s).expect("parses");
        let refused = |spec: RenditionSpec, says: &str| {
            let err = spec.validate().expect_err(says);
            assert!(err.to_string().contains(says), "{err} should say {says:?}");
            assert_eq!(err.class(), crate::ErrorClass::Spec);
        };
        assert!(with(vec![rung("360p"), rung("144p")], false).validate().is_ok());
        refused(
            with(vec![rung("720p")], false),
            "rendition name \"720p\" must be unique",
        );
        refused(with(vec![rung("360p"), rung("360p")], false), "must be unique");
        refused(with(vec![rung("1080p")], false), "up to the primary's 1280x720");
        refused(with(vec![rung("odd:641x360:900")], false), "must be even");
        refused(with(vec![rung("360p")], true), "audio is kept only in a single MP4");
        let five = ["540p", "480p", "360p", "270p", "144p"].map(rung).to_vec();
        refused(with(five, false), "5 further renditions is more than 4");
        let hls_audio = RenditionSpec {
            hls: true,
            keep_audio: true,
            ..RenditionSpec::default()
        };
        refused(hls_audio, "audio is kept only");
    }
}

//! The one libavfilter graph a rendition goes through, in plain numbers.
//!
//! [`Plan::new`] decides the geometry from plain facts about the sources
//! and [`Plan::description`] writes the graph description, all testable
//! without FFmpeg; `filter::Graph` builds it between named buffer sources
//! and the sinks the encoders read:
//!
//! ```text
//! [main_v] fps → scale (→ matrix | tone map) → rotate → setsar → pad|crop ─┐
//! [wm]     rgba → opacity → scale to BT.709 yuva ──────────────── overlay ─┴→ [main]
//! color → overlay [intro_img]  or  [intro_v] (same chain as main) → [intro]
//! [intro][main][outro] concat → [out_v]          (audio: [main_a] → [out_a])
//! ```
//!
//! Every stage is computed for the plan's primary output size, the only
//! one today ([`Outputs`]). A rendition ladder will split `[out_v]` into
//! one scale per further size, after these shared stages.

use std::fmt::Write as _;
use std::time::Duration;

use crate::colour::SourceColour;
use crate::geom::{CardSlot, Fraction, Size, Transform};
use crate::spec::{Corner, Fit, RenditionSpec, Watermark};

/// Sample rate of the AAC audio we write.
pub(crate) const AUDIO_RATE: u32 = 48_000;

/// The end of a `scale` that turns an RGBA image (watermark, card) into
/// YUV with alpha, coded like the video. Without it, `overlay` converts the
/// image with swscale's default BT.601 matrix into a file tagged BT.709:
/// the logo's orange came out at Y 135 instead of 128.
const TO_BT709_TV: &str = ":out_color_matrix=bt709:out_range=tv,format=yuva420p";

/// How one video source (the main video or a card clip) is brought to the
/// output frame.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Fitting {
    /// Size to scale the decoded picture to, before rotation.
    pub scale: Size,
    /// Rotation/mirroring applied after scaling.
    pub transform: Transform,
    pub fit: Fit,
    /// Tone-map PQ/HLG to SDR BT.709.
    pub tonemap: bool,
    /// How the decoded picture's values are read (when not tone-mapped).
    pub colour: SourceColour,
}

impl Fitting {
    /// Fits a picture shown at `display` size, decoded before `transform`,
    /// into `out`. Sizes are even (4:2:0) and never exceed the frame (pad)
    /// or fall short of it (fill).
    pub(crate) fn new(display: Size, out: Size, fit: Fit, transform: Transform) -> Self {
        let (dw, dh) = (f64::from(display.w.max(1)), f64::from(display.h.max(1)));
        let (ow, oh) = (f64::from(out.w), f64::from(out.h));
        let shown = match fit {
            Fit::Pad => {
                let s = (ow / dw).min(oh / dh);
                Size::new(even_round(dw * s).clamp(2, out.w), even_round(dh * s).clamp(2, out.h))
            }
            Fit::Fill => {
                let s = (ow / dw).max(oh / dh);
                Size::new(even_ceil(dw * s).max(out.w), even_ceil(dh * s).max(out.h))
            }
        };
        Fitting {
            scale: if transform.swaps_axes() {
                shown.transposed()
            } else {
                shown
            },
            transform,
            fit,
            tonemap: false,
            colour: SourceColour::BT709_TV,
        }
    }

    /// The same fitting, tone-mapping HDR to SDR when `tonemap` is set.
    pub(crate) fn tone_mapped(self, tonemap: bool) -> Self {
        Fitting { tonemap, ..self }
    }

    /// The same fitting, reading the source's values as `colour` says.
    pub(crate) fn with_colour(self, colour: SourceColour) -> Self {
        Fitting { colour, ..self }
    }

    /// The filter chain from a decoded picture at `rate` to an upright
    /// `out`-sized yuv420p BT.709 picture.
    fn chain(&self, rate: Fraction, out: Size) -> String {
        let mut c = format!("fps={rate}");
        if self.tonemap {
            // Scale first (cheap, keeps 10 bits), then linearise, map the
            // highlights into SDR and convert to BT.709 on the small frame.
            let _ = write!(
                c,
                ",scale=w={}:h={}:flags=bicubic,format=yuv420p10le,\
                 zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,\
                 tonemap=tonemap=hable:desat=0,zscale=t=bt709:m=bt709:r=tv,format=yuv420p",
                self.scale.w, self.scale.h
            );
        } else {
            // Size, pixel format and range (full-range phone and MJPEG
            // sources become TV range) in one swscale pass; the matrix only
            // when it is not BT.709 already, on the small picture.
            self.colour.filters(&mut c, self.scale);
        }
        if let Some(t) = self.transform.filter() {
            c.push(',');
            c.push_str(t);
        }
        c.push_str(",setsar=1");
        match self.fit {
            Fit::Pad => {
                let _ = write!(c, ",pad={}:{}:(ow-iw)/2:(oh-ih)/2:color=black", out.w, out.h);
            }
            Fit::Fill => {
                let _ = write!(c, ",crop={}:{}", out.w, out.h);
            }
        }
        c
    }
}

fn even_round(v: f64) -> u32 {
    ((v / 2.0).round() as u32) * 2
}

fn even_ceil(v: f64) -> u32 {
    ((v / 2.0 - 1e-9).ceil() as u32) * 2
}

/// The watermark's placement, in output pixels.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WatermarkPlacement {
    pub w: u32,
    pub h: u32,
    pub x: u32,
    pub y: u32,
    pub opacity: f32,
}

impl WatermarkPlacement {
    pub(crate) fn new(image: Size, out: Size, spec: &Watermark) -> Self {
        let (image_w, image_h, out_w, out_h) = (image.w, image.h, out.w, out.h);
        let margin = spec.margin;
        let max_w = out_w.saturating_sub(2 * margin).max(2);
        let max_h = out_h.saturating_sub(2 * margin).max(2);
        let mut w = even_round(f64::from(out_w) * f64::from(spec.width_fraction)).clamp(2, max_w);
        let aspect = f64::from(image_h.max(1)) / f64::from(image_w.max(1));
        let mut h = even_round(f64::from(w) * aspect).max(2);
        if h > max_h {
            h = max_h;
            w = even_round(f64::from(h) / aspect).clamp(2, max_w);
        }
        let (x, y) = match spec.corner {
            Corner::TopLeft => (margin, margin),
            Corner::TopRight => (out_w - w - margin, margin),
            Corner::BottomLeft => (margin, out_h - h - margin),
            Corner::BottomRight => (out_w - w - margin, out_h - h - margin),
        };
        WatermarkPlacement {
            w,
            h,
            x,
            y,
            opacity: spec.opacity,
        }
    }
}

/// One card of the plan.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CardPlan {
    /// An image centred on black, at this size.
    Image { size: Size, duration: Duration },
    /// A clip, fitted like the main video.
    Clip { fitting: Fitting, duration: Duration },
}

impl CardPlan {
    /// An image card: the logo fills half the frame height; other images
    /// are fitted inside the frame.
    pub(crate) fn image(image: Size, out: Size, is_logo: bool, duration: Duration) -> Self {
        let bounds = if is_logo { Size::new(out.w, out.h / 2) } else { out };
        let f = Fitting::new(image, bounds, Fit::Pad, Transform::Identity);
        CardPlan::Image {
            size: f.scale,
            duration,
        }
    }
}

/// A video source (the main input or a card clip) as the plan needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SourceVideo {
    /// Size as shown: after non-square pixels and rotation.
    pub display: Size,
    /// How the decoded picture is turned upright.
    pub transform: Transform,
    /// PQ or HLG, to be tone-mapped to SDR.
    pub hdr: bool,
    /// How the decoded values are read.
    pub colour: SourceColour,
}

/// What a card shows, as the plan needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum CardSource {
    /// A decoded image of this size; the league logo is drawn larger.
    Image { size: Size, is_logo: bool },
    /// A clip.
    Clip(SourceVideo),
}

/// What the graph reads from, in plain numbers: the facts of the main
/// input and of the loaded assets that decide the plan.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sources {
    pub main: SourceVideo,
    /// The main input's audio is kept and decodes.
    pub audio: bool,
    /// The size of the decoded watermark image, if one was loaded.
    pub watermark: Option<Size>,
    pub intro: Option<CardSource>,
    pub outro: Option<CardSource>,
}

impl Sources {
    /// The source of one card, if it was loaded.
    fn card(&self, slot: CardSlot) -> Option<&CardSource> {
        match slot {
            CardSlot::Intro => self.intro.as_ref(),
            CardSlot::Outro => self.outro.as_ref(),
        }
    }
}

/// The picture sizes the graph delivers, primary first; never empty.
///
/// One today, the spec's size. A rendition ladder (720p and 360p from one
/// decode) will add more: every stage of the graph is computed for the
/// primary output and shared, and the ladder splits after them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outputs {
    sizes: Vec<Size>,
}

impl Outputs {
    /// A single output of this size.
    pub(crate) fn single(size: Size) -> Self {
        Outputs { sizes: vec![size] }
    }

    /// The output the shared stages (fitting, watermark, cards) are
    /// computed for.
    pub(crate) fn primary(&self) -> Size {
        // Never empty: the only constructor puts one size in.
        self.sizes[0]
    }
}

/// The whole graph in numbers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub outputs: Outputs,
    pub rate: Fraction,
    pub main: Fitting,
    pub watermark: Option<WatermarkPlacement>,
    pub intro: Option<CardPlan>,
    pub outro: Option<CardPlan>,
    /// Keep audio, cut at this media time.
    pub audio_end: Option<Duration>,
}

impl Plan {
    /// Decides the graph's numbers from the spec, what the sources are and
    /// the output frame `rate`. `zscale` says whether this FFmpeg has the
    /// filter tone mapping needs (FFmpeg built with zimg); without it HDR
    /// goes through the plain path, washed out but watchable.
    pub(crate) fn new(spec: &RenditionSpec, sources: &Sources, rate: Fraction, zscale: bool) -> Plan {
        let outputs = Outputs::single(Size::new(spec.width, spec.height));
        let out = outputs.primary();
        let fitting = |v: &SourceVideo| {
            Fitting::new(v.display, out, spec.fit, v.transform)
                .tone_mapped(v.hdr && zscale)
                .with_colour(v.colour)
        };
        let watermark = match (&spec.watermark, sources.watermark) {
            (Some(wm), Some(image)) => Some(WatermarkPlacement::new(image, out, wm)),
            _ => None,
        };
        let card = |slot: CardSlot| -> Option<CardPlan> {
            let duration = spec.card(slot)?.duration;
            Some(match sources.card(slot)? {
                CardSource::Image { size, is_logo } => CardPlan::image(*size, out, *is_logo, duration),
                CardSource::Clip(video) => CardPlan::Clip {
                    fitting: fitting(video),
                    duration,
                },
            })
        };
        Plan {
            rate,
            main: fitting(&sources.main),
            watermark,
            intro: card(CardSlot::Intro),
            outro: card(CardSlot::Outro),
            // The transcoder cuts the audio where the decoded video ends;
            // the graph also stops it at the cap.
            audio_end: sources.audio.then_some(spec.max_duration),
            outputs,
        }
    }

    /// The plan of one card, if the rendition has it.
    pub(crate) fn card(&self, slot: CardSlot) -> Option<&CardPlan> {
        match slot {
            CardSlot::Intro => self.intro.as_ref(),
            CardSlot::Outro => self.outro.as_ref(),
        }
    }
}

/// Names of the graph's endpoints.
pub(crate) mod pad {
    pub const MAIN_V: &str = "main_v";
    pub const MAIN_A: &str = "main_a";
    pub const WATERMARK: &str = "wm";
    pub const OUT_V: &str = "out_v";
    pub const OUT_A: &str = "out_a";

    use super::CardSlot;

    /// The source a card reads from: `<name>_img` for an image, `<name>_v`
    /// for a clip.
    pub fn card(slot: CardSlot, clip: bool) -> String {
        let name = slot.name();
        if clip {
            format!("{name}_v")
        } else {
            format!("{name}_img")
        }
    }
}

impl Plan {
    /// The libavfilter description of the graph.
    pub(crate) fn description(&self) -> String {
        let mut g = String::new();
        self.write_main(&mut g);
        self.write_audio(&mut g);
        for slot in CardSlot::ALL {
            if let Some(card) = self.card(slot) {
                self.write_card(&mut g, slot, card);
            }
        }
        if self.has_cards() {
            self.write_concat(&mut g);
        } else if g.ends_with(';') {
            g.pop();
        }
        g
    }

    fn has_cards(&self) -> bool {
        self.intro.is_some() || self.outro.is_some()
    }

    /// The main video: fitted, then watermarked.
    fn write_main(&self, g: &mut String) {
        let _ = write!(
            g,
            "[{}]{}",
            pad::MAIN_V,
            self.main.chain(self.rate, self.outputs.primary())
        );
        if let Some(wm) = &self.watermark {
            let _ = write!(
                g,
                "[main_fit];[{}]format=rgba,colorchannelmixer=aa={:.3},scale=w={}:h={}:flags=lanczos{TO_BT709_TV}[wm_s];\
                 [main_fit][wm_s]overlay=x={}:y={}:eof_action=repeat:format=yuv420",
                pad::WATERMARK,
                wm.opacity,
                wm.w,
                wm.h,
                wm.x,
                wm.y
            );
        }
        let label = if self.has_cards() { "main" } else { pad::OUT_V };
        let _ = write!(g, ",format=yuv420p[{label}];");
    }

    /// The main audio: resampled to a continuous 48 kHz stereo stream that
    /// starts with the first video frame and stops at the cap.
    fn write_audio(&self, g: &mut String) {
        let Some(end) = self.audio_end else { return };
        let label = if self.has_cards() { "main_au" } else { pad::OUT_A };
        let _ = write!(
            g,
            "[{}]aresample={AUDIO_RATE}:async=1:first_pts=0,\
             aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo,\
             atrim=end={:.6}[{label}];",
            pad::MAIN_A,
            end.as_secs_f64()
        );
    }

    /// One card: an image centred on black, or a clip fitted like the main
    /// video; with silence when the rendition has audio.
    fn write_card(&self, g: &mut String, slot: CardSlot, card: &CardPlan) {
        let (out, rate, name) = (self.outputs.primary(), self.rate, slot.name());
        match card {
            CardPlan::Image { size, duration } => {
                let d = duration.as_secs_f64();
                let _ = write!(
                    g,
                    "color=c=black:s={out}:r={rate}:d={d:.6},format=yuv420p[{name}_bg];\
                     [{src}]format=rgba,scale=w={}:h={}:flags=lanczos{TO_BT709_TV}[{name}_fg];\
                     [{name}_bg][{name}_fg]overlay=x=(W-w)/2:y=(H-h)/2:eof_action=repeat:format=yuv420,\
                     setsar=1,format=yuv420p[{name}];",
                    size.w,
                    size.h,
                    src = pad::card(slot, false)
                );
            }
            CardPlan::Clip { fitting, duration } => {
                let _ = write!(
                    g,
                    "[{src}]{chain},trim=duration={d:.6},format=yuv420p[{name}];",
                    src = pad::card(slot, true),
                    chain = fitting.chain(rate, out),
                    d = duration.as_secs_f64()
                );
            }
        }
        if self.audio_end.is_some() {
            // One silent sample: concat pads a segment's audio with
            // silence to the length of its video, whatever that is.
            let _ = write!(
                g,
                "anullsrc=r={AUDIO_RATE}:cl=stereo,atrim=end_sample=1,aformat=sample_fmts=fltp[{name}_a];"
            );
        }
    }

    /// Intro, main and outro joined, video and audio together.
    fn write_concat(&self, g: &mut String) {
        let audio = self.audio_end.is_some();
        let segments = [
            self.intro.as_ref().map(|_| ("intro", "intro_a")),
            Some(("main", "main_au")),
            self.outro.as_ref().map(|_| ("outro", "outro_a")),
        ];
        let mut n = 0;
        for (video, sound) in segments.into_iter().flatten() {
            n += 1;
            let _ = write!(g, "[{video}]");
            if audio {
                let _ = write!(g, "[{sound}]");
            }
        }
        let _ = write!(g, "concat=n={n}:v=1:a={}[{}]", u8::from(audio), pad::OUT_V);
        if audio {
            let _ = write!(g, "[{}]", pad::OUT_A);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Card, CardContent};

    const HD: Size = Size::new(1280, 720);
    const FPS30: Fraction = Fraction { num: 30, den: 1 };

    /// An upright, square-pixel SDR 1080p source.
    fn upright_hd() -> SourceVideo {
        SourceVideo {
            display: Size::new(1920, 1080),
            transform: Transform::Identity,
            hdr: false,
            colour: SourceColour::BT709_TV,
        }
    }

    /// Just the main video: no audio, watermark image or cards.
    fn sources(main: SourceVideo) -> Sources {
        Sources {
            main,
            audio: false,
            watermark: None,
            intro: None,
            outro: None,
        }
    }

    #[test]
    fn a_portrait_phone_clip_is_pillarboxed_upright() {
        // 1920x1080 coded, rotated 90°: shown as 1080x1920.
        let f = Fitting::new(Size::new(1080, 1920), HD, Fit::Pad, Transform::Clock);
        // Shown as 406x720 (even), so scaled to 720x406 before the turn.
        assert_eq!((f.scale.w, f.scale.h), (720, 406));
        let chain = f.chain(Fraction { num: 30, den: 1 }, HD);
        assert!(chain.starts_with("fps=30,scale=w=720:h=406"), "{chain}");
        assert!(chain.contains("transpose=clock,setsar=1,pad=1280:720"), "{chain}");
    }

    #[test]
    fn a_bt601_source_changes_matrix_on_the_small_picture_before_the_bars() {
        let sd = Size::new(720, 576);
        let colour = SourceColour::new(None, false, sd);
        let f = Fitting::new(Size::new(1024, 576), HD, Fit::Pad, Transform::Identity).with_colour(colour);
        let chain = f.chain(Fraction { num: 25, den: 1 }, HD);
        let scale = chain.find("scale=w=1280:h=720").expect("scale");
        let matrix = chain.find(",colorspace=").expect("a matrix conversion");
        let pad = chain.find(",pad=").expect("pad");
        assert!(scale < matrix && matrix < pad, "{chain}");
        // A BT.709 source gets no conversion at all.
        let f = f.with_colour(SourceColour::BT709_TV);
        assert!(!f.chain(Fraction { num: 25, den: 1 }, HD).contains("colorspace"));
    }

    #[test]
    fn anamorphic_pal_fills_the_frame_and_fill_mode_covers_it() {
        // 720x576 with SAR 64:45 is shown as 1024x576 = 16:9.
        let f = Fitting::new(Size::new(1024, 576), HD, Fit::Pad, Transform::Identity);
        assert_eq!((f.scale.w, f.scale.h), (1280, 720));
        // A 4:3 picture in fill mode covers the width and is cropped.
        let f = Fitting::new(Size::new(640, 480), HD, Fit::Fill, Transform::Identity);
        assert_eq!((f.scale.w, f.scale.h), (1280, 960));
        assert!(f.chain(Fraction { num: 25, den: 1 }, HD).ends_with("crop=1280:720"));
    }

    #[test]
    fn odd_and_tiny_sizes_stay_even_and_inside_the_frame() {
        let f = Fitting::new(Size::new(639, 359), HD, Fit::Pad, Transform::Identity);
        assert_eq!(f.scale.w % 2, 0);
        assert_eq!(f.scale.h % 2, 0);
        assert!(f.scale.w <= 1280 && f.scale.h <= 720);
        let f = Fitting::new(Size::new(64, 64), HD, Fit::Pad, Transform::Identity);
        assert_eq!((f.scale.w, f.scale.h), (720, 720));
    }

    #[test]
    fn watermark_sits_in_its_corner_with_its_margin() {
        let spec = Watermark::default();
        let wm = WatermarkPlacement::new(Size::new(512, 512), HD, &spec);
        assert_eq!((wm.w, wm.h), (128, 128));
        assert_eq!((wm.x, wm.y), (1280 - 128 - 24, 720 - 128 - 24));
        let spec = Watermark {
            corner: Corner::TopLeft,
            margin: 10,
            width_fraction: 0.25,
            ..Watermark::default()
        };
        let wm = WatermarkPlacement::new(Size::new(512, 256), HD, &spec);
        assert_eq!((wm.x, wm.y, wm.w, wm.h), (10, 10, 320, 160));
    }

    #[test]
    fn description_joins_cards_and_audio_with_concat() {
        let spec = RenditionSpec {
            watermark: None,
            intro: Some(Card::logo()),
            ..RenditionSpec::default()
        };
        let sources = Sources {
            audio: true,
            intro: Some(CardSource::Image {
                size: Size::new(512, 512),
                is_logo: true,
            }),
            ..sources(upright_hd())
        };
        let plan = Plan::new(&spec, &sources, FPS30, true);
        assert_eq!(
            plan,
            Plan {
                outputs: Outputs::single(HD),
                rate: FPS30,
                main: Fitting::new(Size::new(1920, 1080), HD, Fit::Pad, Transform::Identity),
                watermark: None,
                intro: Some(CardPlan::image(
                    Size::new(512, 512),
                    HD,
                    true,
                    Duration::from_millis(2500),
                )),
                outro: None,
                audio_end: Some(Duration::from_secs(30)),
            }
        );
        let d = plan.description();
        assert!(d.contains("color=c=black:s=1280x720:r=30:d=2.500000"), "{d}");
        assert!(
            d.contains("[intro][intro_a][main][main_au]concat=n=2:v=1:a=1[out_v][out_a]"),
            "{d}"
        );
        assert!(!d.contains("overlay=x=1128"), "no watermark was asked for: {d}");
    }

    #[test]
    fn the_default_plan_has_one_720p_output_with_the_phone_clip_upright_and_watermarked() {
        let portrait = SourceVideo {
            display: Size::new(1080, 1920),
            transform: Transform::Clock,
            ..upright_hd()
        };
        let sources = Sources {
            watermark: Some(Size::new(512, 512)),
            ..sources(portrait)
        };
        let plan = Plan::new(&RenditionSpec::default(), &sources, FPS30, true);
        assert_eq!(plan.outputs.sizes, vec![HD], "one output, the spec's size");
        assert_eq!(plan.main.scale, Size::new(720, 406));
        let wm = plan.watermark.as_ref().expect("the default watermark");
        assert_eq!((wm.x, wm.y, wm.w, wm.h), (1128, 568, 128, 128));
        assert_eq!(plan.audio_end, None, "audio is off by default");
        let d = plan.description();
        assert!(d.contains("transpose=clock,setsar=1,pad=1280:720"), "{d}");
        assert!(d.contains("overlay=x=1128:y=568"), "{d}");
        assert!(!d.contains("out_a"), "{d}");
    }

    #[test]
    fn hdr_is_tone_mapped_only_where_ffmpeg_has_zscale() {
        let hdr = SourceVideo {
            hdr: true,
            ..upright_hd()
        };
        let spec = RenditionSpec::default();
        let mapped = Plan::new(&spec, &sources(hdr), FPS30, true);
        assert!(mapped.main.tonemap);
        assert!(mapped.description().contains("tonemap=tonemap=hable"));
        let plain = Plan::new(&spec, &sources(hdr), FPS30, false);
        assert!(!plain.main.tonemap);
        assert!(!plain.description().contains("tonemap"));
    }

    #[test]
    fn a_card_clip_is_fitted_like_the_main_video_for_the_card_s_time() {
        let spec = RenditionSpec {
            fit: Fit::Fill,
            outro: Some(Card {
                content: CardContent::Clip("outro.mp4".into()),
                duration: Duration::from_secs(2),
            }),
            ..RenditionSpec::default()
        };
        let clip = SourceVideo {
            display: Size::new(640, 480),
            ..upright_hd()
        };
        let sources = Sources {
            outro: Some(CardSource::Clip(clip)),
            ..sources(upright_hd())
        };
        let plan = Plan::new(&spec, &sources, FPS30, true);
        assert_eq!(
            plan.outro,
            Some(CardPlan::Clip {
                fitting: Fitting::new(Size::new(640, 480), HD, Fit::Fill, Transform::Identity),
                duration: Duration::from_secs(2),
            })
        );
        assert_eq!(plan.intro, None);
        // The spec asks for a watermark, but no image was loaded for it.
        assert_eq!(plan.watermark, None);
        let d = plan.description();
        assert!(d.contains("[outro_v]fps=30,scale=w=1280:h=960"), "{d}");
        assert!(d.contains("crop=1280:720,trim=duration=2.000000"), "{d}");
    }
}

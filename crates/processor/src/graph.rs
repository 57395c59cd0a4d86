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
//! Every stage is computed for the plan's primary output size
//! ([`Outputs`]). A rendition ladder splits the finished primary picture
//! into one downscale per further size, after every shared stage:
//!
//! ```text
//! … → [ladder_v] split → [out_v]                    (the primary)
//!                      → scale=640:360 → [out_v1]   (each further size)
//! ```
//!
//! Scaling the finished picture (letterbox, watermark and cards included)
//! costs one small scale per rung, and keeps the watermark where it is on
//! every size; fitting and watermarking each size from the source would
//! cost a second full-size scale and overlay per rung for a logo a few
//! pixels sharper on a phone's 360p.

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
/// Every stage of the graph is computed for the primary output and shared;
/// the ladder's further sizes are scaled from it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outputs {
    sizes: Vec<Size>,
}

impl Outputs {
    /// A single output of this size.
    #[cfg(test)]
    pub(crate) fn single(size: Size) -> Self {
        Outputs { sizes: vec![size] }
    }

    /// The primary output and the further sizes after it.
    pub(crate) fn with_ladder(primary: Size, further: impl IntoIterator<Item = Size>) -> Self {
        let mut sizes = vec![primary];
        sizes.extend(further);
        Outputs { sizes }
    }

    /// The further sizes, in the order of their sinks (`out_v1`, …).
    pub(crate) fn further(&self) -> &[Size] {
        &self.sizes[1..]
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
        let outputs = Outputs::with_ladder(
            Size::new(spec.width, spec.height),
            spec.ladder.iter().map(|r| Size::new(r.width, r.height)),
        );
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
    /// Where the finished primary picture goes before the ladder's split.
    pub const LADDER_V: &str = "ladder_v";

    use super::CardSlot;

    /// The sink of the ladder's `n`-th further size (from 1).
    pub fn rung(n: usize) -> String {
        format!("{OUT_V}{n}")
    }

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
        self.write_ladder(&mut g);
        g
    }

    /// The label the finished primary picture gets: its sink, or the
    /// ladder's split.
    fn finished_v(&self) -> &'static str {
        if self.outputs.further().is_empty() {
            pad::OUT_V
        } else {
            pad::LADDER_V
        }
    }

    /// The ladder: the finished picture split, one downscale per further
    /// size.
    fn write_ladder(&self, g: &mut String) {
        let further = self.outputs.further();
        if further.is_empty() {
            return;
        }
        let _ = write!(g, ";[{}]split={}[{}]", pad::LADDER_V, further.len() + 1, pad::OUT_V);
        for n in 1..=further.len() {
            let _ = write!(g, "[rung{n}]");
        }
        for (i, size) in further.iter().enumerate() {
            let n = i + 1;
            let _ = write!(
                g,
                ";[rung{n}]scale=w={}:h={}:flags=bicubic,setsar=1,format=yuv420p[{}]",
                size.w,
                size.h,
                pad::rung(n)
            );
        }
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
        let label = if self.has_cards() { "main" } else { self.finished_v() };
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
        let _ = write!(g, "concat=n={n}:v=1:a={}[{}]", u8::from(audio), self.finished_v());
        if audio {
            let _ = write!(g, "[{}]", pad::OUT_A);
        }
    }
}

#[cfg(test)]
mod tests;

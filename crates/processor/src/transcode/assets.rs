//! What a rendition adds to the main video (watermark and cards), loaded
//! once per job, and the plan of the graph that puts it all together.

use ffmpeg_next::frame;

use super::source::Clip;
use crate::control::Budget;
use crate::error::{Error, Result};
use crate::geom::{CardSlot, Fraction, Size};
use crate::graph::{CardPlan, Fitting, Plan, WatermarkPlacement};
use crate::image;
use crate::probe::VideoFacts;
use crate::spec::{CardContent, Image, RenditionSpec};

/// The watermark and card images, decoded once per job, and the card clips,
/// opened with the same defences as the main input.
pub(super) struct Assets {
    pub watermark: Option<frame::Video>,
    intro: Option<CardAsset>,
    outro: Option<CardAsset>,
}

pub(super) enum CardAsset {
    Image { frame: frame::Video, is_logo: bool },
    Clip(Box<Clip>),
}

impl Assets {
    pub(super) fn load(spec: &RenditionSpec, budget: &Budget) -> Result<Self> {
        let watermark = spec.watermark.as_ref().map(|w| image::load(&w.image)).transpose()?;
        Ok(Assets {
            watermark,
            intro: load_card(spec, CardSlot::Intro, budget)?,
            outro: load_card(spec, CardSlot::Outro, budget)?,
        })
    }

    pub(super) fn card(&self, slot: CardSlot) -> Option<&CardAsset> {
        match slot {
            CardSlot::Intro => self.intro.as_ref(),
            CardSlot::Outro => self.outro.as_ref(),
        }
    }

    /// Takes a card's clip out: it is fed once and then dropped.
    pub(super) fn take_clip(&mut self, slot: CardSlot) -> Option<Box<Clip>> {
        let card = match slot {
            CardSlot::Intro => &mut self.intro,
            CardSlot::Outro => &mut self.outro,
        };
        match card.take() {
            Some(CardAsset::Clip(clip)) => Some(clip),
            other => {
                *card = other;
                None
            }
        }
    }
}

fn load_card(spec: &RenditionSpec, slot: CardSlot, budget: &Budget) -> Result<Option<CardAsset>> {
    let Some(card) = spec.card(slot) else { return Ok(None) };
    Ok(Some(match &card.content {
        CardContent::Image(img) => CardAsset::Image {
            frame: image::load(img)?,
            is_logo: *img == Image::Logo,
        },
        CardContent::Clip(path) => {
            // A card is configuration: its failures are the spec's.
            let clip = Clip::open(path, spec, budget).map_err(|e| match e {
                Error::Cancelled { .. } | Error::TimedOut { .. } => e,
                other => Error::InvalidSpec(format!("card clip: {other}")),
            })?;
            CardAsset::Clip(Box::new(clip))
        }
    }))
}

/// Decides the graph's numbers from the spec, the input and the assets.
pub(super) fn plan(spec: &RenditionSpec, facts: &VideoFacts, assets: &Assets, rate: Fraction) -> Plan {
    let out = Size::new(spec.width, spec.height);
    // Tone mapping needs zscale (FFmpeg built with zimg); without it HDR
    // goes through the plain path, washed out but watchable.
    let zscale = ffmpeg_next::filter::find("zscale").is_some();
    let fitting = |facts: &VideoFacts| {
        let display = Size::new(facts.info.display_width, facts.info.display_height);
        Fitting::new(display, out, spec.fit, facts.transform)
            .tone_mapped(facts.info.hdr && zscale)
            .with_colour(facts.colour)
    };
    let watermark = match (&spec.watermark, &assets.watermark) {
        (Some(wm), Some(frame)) => Some(WatermarkPlacement::new(
            Size::new(frame.width(), frame.height()),
            out,
            wm,
        )),
        _ => None,
    };
    let card = |slot: CardSlot| -> Option<CardPlan> {
        let duration = spec.card(slot)?.duration;
        Some(match assets.card(slot)? {
            CardAsset::Image { frame, is_logo } => {
                CardPlan::image(Size::new(frame.width(), frame.height()), out, *is_logo, duration)
            }
            CardAsset::Clip(clip) => CardPlan::Clip {
                fitting: fitting(&clip.facts),
                duration,
            },
        })
    };
    Plan {
        out,
        rate,
        main: fitting(facts),
        watermark,
        intro: card(CardSlot::Intro),
        outro: card(CardSlot::Outro),
        // The transcoder cuts the audio where the decoded video ends; the
        // graph also stops it at the cap.
        audio_end: facts.audio_index.map(|_| spec.max_duration),
    }
}

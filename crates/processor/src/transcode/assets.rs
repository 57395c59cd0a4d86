//! What a rendition adds to the main video (watermark and cards), loaded
//! once per job, and the plain facts of them and of the main input that
//! the graph's plan is decided from.

use ffmpeg_next::frame;

use super::source::Clip;
use crate::control::Budget;
use crate::error::{Error, Result};
use crate::geom::{CardSlot, Size};
use crate::graph::{CardSource, SourceVideo, Sources};
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

/// The plan's view of a video source: how it is shown and read.
fn source_video(facts: &VideoFacts) -> SourceVideo {
    SourceVideo {
        display: Size::new(facts.info.display_width, facts.info.display_height),
        transform: facts.transform,
        hdr: facts.info.hdr,
        colour: facts.colour,
    }
}

impl Assets {
    /// The plain facts [`Plan::new`](crate::graph::Plan::new) decides from:
    /// the main input's (`main`) and the loaded assets'.
    pub(super) fn sources(&self, main: &VideoFacts) -> Sources {
        let card = |slot: CardSlot| {
            self.card(slot).map(|asset| match asset {
                CardAsset::Image { frame, is_logo } => CardSource::Image {
                    size: Size::new(frame.width(), frame.height()),
                    is_logo: *is_logo,
                },
                CardAsset::Clip(clip) => CardSource::Clip(source_video(&clip.facts)),
            })
        };
        Sources {
            main: source_video(main),
            audio: main.audio_index.is_some(),
            watermark: self.watermark.as_ref().map(|f| Size::new(f.width(), f.height())),
            intro: card(CardSlot::Intro),
            outro: card(CardSlot::Outro),
        }
    }
}

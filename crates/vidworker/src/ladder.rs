//! The flags of what a transcode writes besides the primary rendition: the
//! ladder, the rate caps, HLS and the storyboard.

use processor::{RateCap, RenditionSpec, Rung, default_cap};
use worker::config::ConfigError;

/// The ladder, rate caps, HLS and storyboard.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Renditions")]
pub struct LadderArgs {
    /// Further renditions from the same decode, each its own MP4 (and HLS
    /// level): standard names (1080p, 720p, 540p, 480p, 360p, 270p, 240p,
    /// 144p) or NAME:WIDTHxHEIGHT:KBPS, comma-separated. The primary's own
    /// name (720p) may lead the list, as in `720p,360p`.
    #[arg(long, env = "RENDITIONS", value_delimiter = ',', value_name = "LIST")]
    pub renditions: Vec<String>,
    /// The primary rendition's rate cap in kbit/s (x264 VBV over CRF); 0
    /// for none [default: 4500 for 720p, by pixel count for other sizes].
    #[arg(long, env = "RENDITION_MAXRATE", value_name = "KBPS")]
    pub maxrate: Option<u32>,
    /// The primary's VBV buffer in kbit [default: two seconds of the cap].
    #[arg(long, env = "RENDITION_BUFSIZE", value_name = "KBITS")]
    pub bufsize: Option<u32>,
    /// Also write HLS: fMP4 segments, a playlist per rendition and a
    /// master playlist.
    #[arg(long, env = "RENDITION_HLS")]
    pub hls: bool,
    /// Also write a storyboard: a JPEG sprite of 160-pixel-wide
    /// thumbnails, one a second, and a WebVTT file that points into it.
    #[arg(long, env = "RENDITION_STORYBOARD")]
    pub storyboard: bool,
}

impl LadderArgs {
    /// Fills in `spec`'s ladder, cap, HLS and storyboard.
    pub fn apply(&self, spec: &mut RenditionSpec) -> Result<(), ConfigError> {
        let primary = spec.name();
        spec.ladder = self
            .renditions
            .iter()
            .map(|r| r.trim())
            .filter(|r| !r.is_empty() && *r != primary)
            .map(Rung::parse)
            .collect::<Result<_, _>>()
            .map_err(ConfigError)?;
        spec.cap = match (self.maxrate, self.bufsize) {
            (Some(0), _) => None,
            (Some(max_kbps), buffer) => Some(RateCap {
                buffer_kbits: buffer.unwrap_or(max_kbps * 2),
                ..RateCap::new(max_kbps)
            }),
            (None, buffer) => {
                let cap = default_cap(spec.width, spec.height);
                Some(RateCap {
                    buffer_kbits: buffer.unwrap_or(cap.buffer_kbits),
                    ..cap
                })
            }
        };
        spec.hls = self.hls;
        spec.storyboard = self.storyboard;
        Ok(())
    }
}

//! What a processed video's row records about its outputs and its cost
//! (the `outputs` and `cost` JSONB columns), and how a transcode's files
//! map to S3 keys under the claim's own stem:
//!
//! ```text
//! processed/<id>/<claim>.mp4                 the primary rendition (processed_key)
//! processed/<id>/<claim>.jpg                 its poster (poster_key)
//! processed/<id>/<claim>/360p.mp4            the ladder's MP4s
//! processed/<id>/<claim>/hls/master.m3u8     HLS: the master playlist,
//! processed/<id>/<claim>/hls/720p/…          a media playlist, init segment and segments per rendition
//! processed/<id>/<claim>/storyboard.jpg      the storyboard's sprite
//! processed/<id>/<claim>/storyboard.vtt      and its cues
//! ```
//!
//! Everything of one claim lies under its stem, so clean-up keeps a
//! recorded claim's files by prefix and never needs to read this JSON.
//! Paths come from the transcode child, which is untrusted: each must be a
//! regular file where the processor writes, or the job fails.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use processor::Report;
use serde::{Deserialize, Serialize};

/// Every output of a processed video.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outputs {
    /// The MP4 renditions, the primary (`processed_key`) first.
    pub renditions: Vec<OutputRendition>,
    /// HLS, if made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<Hls>,
    /// The storyboard, if made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storyboard: Option<Storyboard>,
    /// Objects stored, the primary and its poster included.
    pub objects: u32,
    /// Their total size.
    pub bytes: u64,
}

/// One MP4 rendition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRendition {
    /// `720p`, `360p`, …
    pub name: String,
    /// Its S3 key.
    pub key: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size in bytes.
    pub bytes: u64,
    /// The video's average rate, kbit/s.
    pub average_kbps: u32,
    /// Its highest rate over any one second, kbit/s.
    pub peak_kbps: u32,
}

/// The HLS presentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hls {
    /// The master playlist's key; the media playlists and segments lie
    /// beside it.
    pub master: String,
    /// Objects it is made of, the playlists included.
    pub objects: u32,
}

/// The storyboard: a sprite of thumbnails and the WebVTT cues into it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Storyboard {
    /// The JPEG sprite's key.
    pub sprite: String,
    /// The WebVTT file's key.
    pub vtt: String,
    /// Thumbnails in the sprite.
    pub thumbnails: u32,
    /// Their width.
    pub thumbnail_width: u32,
    /// Their height.
    pub thumbnail_height: u32,
    /// Seconds of video per thumbnail.
    pub interval_seconds: f64,
}

/// What a job cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// CPU seconds of the transcode (every thread of its child process);
    /// `None` when it ran in the worker's own process, where one job's
    /// share cannot be told from the others'.
    pub cpu_seconds: Option<f64>,
    /// The transcode's peak resident memory, when it ran in a child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Wall seconds per stage.
    pub wall_seconds: StageSeconds,
    /// `COST_PER_VCPU_HOUR`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_hour_price: Option<f64>,
    /// `cpu_seconds` at that price, in dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dollars: Option<f64>,
}

/// Wall seconds of each stage of a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSeconds {
    /// Fetching the original (and waiting for a transcode slot, if the
    /// download was a prefetch).
    pub download: f64,
    /// The transcode.
    pub transcode: f64,
    /// Storing every output.
    pub upload: f64,
}

impl Cost {
    /// The cost of a job whose transcode used `cpu_seconds`, at
    /// `price` dollars per vCPU-hour if set. A vCPU-hour is 3600 CPU
    /// seconds: what EC2 bills a vCPU for an hour.
    pub fn new(cpu_seconds: Option<f64>, peak_rss_bytes: Option<u64>, wall: StageSeconds, price: Option<f64>) -> Cost {
        let dollars = cpu_seconds
            .zip(price)
            .map(|(cpu, price)| round(cpu / 3600.0 * price, 1e8));
        Cost {
            cpu_seconds: cpu_seconds.map(|c| round(c, 1e3)),
            peak_rss_bytes,
            wall_seconds: StageSeconds {
                download: round(wall.download, 1e3),
                transcode: round(wall.transcode, 1e3),
                upload: round(wall.upload, 1e3),
            },
            vcpu_hour_price: price,
            dollars,
        }
    }
}

fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

/// Seconds of a stage.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One file to store.
#[derive(Clone, Debug, PartialEq)]
pub struct Upload {
    /// Where it is.
    pub path: PathBuf,
    /// Where it goes.
    pub key: String,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// A transcode's files, mapped to the claim's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The primary rendition's key (`<stem>.mp4`).
    pub key: String,
    /// The poster's key (`<stem>.jpg`), if there is one.
    pub poster_key: Option<String>,
    /// Every file to store: the extras first, then the poster, then the
    /// primary rendition (so a consumer that sees the rendition finds the
    /// rest).
    pub uploads: Vec<Upload>,
    /// What the row records.
    pub outputs: Outputs,
}

/// Why a transcode's report cannot be stored as it stands.
#[derive(Debug, thiserror::Error)]
#[error("the transcode reported {path:?}, {reason}")]
pub struct PlanError {
    path: PathBuf,
    reason: &'static str,
}

impl Plan {
    /// Maps the files of `report`, a transcode to `output`, to keys under
    /// `stem`. Every path must be where the processor writes (`output`,
    /// the poster beside it, the extras directory) and a regular file.
    pub fn new(report: &Report, output: &Path, stem: &str) -> Result<Plan, PlanError> {
        let keys = Keys {
            extras_dir: output.with_extension(""),
            stem,
        };
        let key = format!("{stem}.mp4");
        let poster_key = report.poster.as_ref().map(|_| format!("{stem}.jpg"));
        if report.output != output {
            return Err(PlanError::new(&report.output, "not the rendition asked for"));
        }
        let mut uploads = Vec::with_capacity(report.extras.len() + 2);
        for path in &report.extras {
            uploads.push(Upload {
                path: path.clone(),
                key: keys.of(path)?,
                content_type: content_type(path).ok_or_else(|| PlanError::new(path, "of a type it never writes"))?,
            });
        }
        if let (Some(poster), Some(poster_key)) = (&report.poster, &poster_key) {
            if *poster != output.with_extension("jpg") {
                return Err(PlanError::new(poster, "not the poster's place"));
            }
            uploads.push(Upload {
                path: poster.clone(),
                key: poster_key.clone(),
                content_type: "image/jpeg",
            });
        }
        uploads.push(Upload {
            path: output.to_owned(),
            key: key.clone(),
            content_type: "video/mp4",
        });
        let mut bytes = 0;
        for upload in &uploads {
            match std::fs::symlink_metadata(&upload.path) {
                Ok(meta) if meta.is_file() => bytes += meta.len(),
                _ => return Err(PlanError::new(&upload.path, "which is not a regular file")),
            }
        }
        let outputs = Outputs {
            objects: uploads.len() as u32,
            bytes,
            ..keys.outputs(report, output, &key)?
        };
        Ok(Plan {
            key,
            poster_key,
            uploads,
            outputs,
        })
    }
}

impl PlanError {
    fn new(path: &Path, reason: &'static str) -> PlanError {
        PlanError {
            path: path.to_owned(),
            reason,
        }
    }
}

/// The keys of a claim's extras: `<stem>/<path in the extras directory>`.
struct Keys<'a> {
    extras_dir: PathBuf,
    stem: &'a str,
}

impl Keys<'_> {
    /// The key of a file in the extras directory.
    fn of(&self, path: &Path) -> Result<String, PlanError> {
        let rel = path
            .strip_prefix(&self.extras_dir)
            .map_err(|_| PlanError::new(path, "which is outside its outputs"))?;
        let parts: Option<Vec<&str>> = rel
            .components()
            .map(|c| match c {
                Component::Normal(part) => part.to_str(),
                _ => None,
            })
            .collect();
        match parts {
            Some(parts) if !parts.is_empty() => Ok(format!("{}/{}", self.stem, parts.join("/"))),
            _ => Err(PlanError::new(path, "which is not a plain relative name")),
        }
    }

    /// The renditions, HLS and storyboard of `report` by their keys (the
    /// counts left at zero).
    fn outputs(&self, report: &Report, output: &Path, key: &str) -> Result<Outputs, PlanError> {
        let renditions = report
            .renditions
            .iter()
            .map(|r| {
                Ok(OutputRendition {
                    name: r.name.clone(),
                    key: if r.path == output {
                        key.to_owned()
                    } else {
                        self.of(&r.path)?
                    },
                    width: r.width,
                    height: r.height,
                    bytes: r.bytes,
                    average_kbps: r.average_kbps,
                    peak_kbps: r.peak_kbps,
                })
            })
            .collect::<Result<Vec<_>, PlanError>>()?;
        let hls = match &report.hls {
            Some(master) => {
                let dir = master.parent().unwrap_or(master);
                Some(Hls {
                    master: self.of(master)?,
                    objects: report.extras.iter().filter(|p| p.starts_with(dir)).count() as u32,
                })
            }
            None => None,
        };
        let storyboard = match &report.storyboard {
            Some(s) => Some(Storyboard {
                sprite: self.of(&s.sprite)?,
                vtt: self.of(&s.vtt)?,
                thumbnails: s.thumbnails,
                thumbnail_width: s.thumbnail_width,
                thumbnail_height: s.thumbnail_height,
                interval_seconds: s.interval,
            }),
            None => None,
        };
        Ok(Outputs {
            renditions,
            hls,
            storyboard,
            objects: 0,
            bytes: 0,
        })
    }
}

/// The `Content-Type` of a file the processor writes, by its extension.
fn content_type(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "mp4" => "video/mp4",
        "m4s" => "video/iso.segment",
        "m3u8" => "application/vnd.apple.mpegurl",
        "vtt" => "text/vtt",
        "jpg" => "image/jpeg",
        _ => return None,
    })
}

/// Whether `key` belongs to the outputs of the rendition recorded at
/// `processed_key`: the key itself, or a key under its stem.
pub fn belongs_to(key: &str, processed_key: &str) -> bool {
    if key == processed_key {
        return true;
    }
    let stem = processed_key.strip_suffix(".mp4").unwrap_or(processed_key);
    key.strip_prefix(stem).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_belong_to_their_claim_only() {
        let recorded = "processed/v/aaaa.mp4";
        assert!(belongs_to("processed/v/aaaa.mp4", recorded));
        assert!(belongs_to("processed/v/aaaa/hls/720p/seg_001.m4s", recorded));
        assert!(!belongs_to("processed/v/aaaab/360p.mp4", recorded), "a longer token");
        assert!(!belongs_to("processed/v/bbbb/360p.mp4", recorded));
        assert!(
            !belongs_to("processed/v/aaaa.jpg", recorded),
            "the poster has its own column"
        );
    }

    #[test]
    fn a_child_can_only_name_files_in_its_outputs() {
        let keys = Keys {
            extras_dir: PathBuf::from("/jobs/j/rendition"),
            stem: "processed/v/aaaa",
        };
        let key = |p: &str| keys.of(Path::new(p)).map_err(|e| e.to_string());
        assert_eq!(
            key("/jobs/j/rendition/hls/360p/seg_001.m4s").as_deref(),
            Ok("processed/v/aaaa/hls/360p/seg_001.m4s")
        );
        for hostile in [
            "/etc/shadow",
            "/jobs/j/rendition/../original",
            "/jobs/j/rendition",
            "/jobs/j/rendition-x/a.mp4",
            "relative/a.mp4",
        ] {
            let e = key(hostile).expect_err(hostile);
            assert!(e.starts_with("the transcode reported"), "{e}");
        }
    }

    #[test]
    fn cost_is_priced_per_vcpu_hour() {
        let wall = StageSeconds {
            download: 0.5,
            transcode: 20.0,
            upload: 1.25,
        };
        let cost = Cost::new(Some(36.0), None, wall.clone(), Some(0.05));
        assert_eq!(cost.dollars, Some(0.0005));
        assert_eq!(Cost::new(None, None, wall.clone(), Some(0.05)).dollars, None);
        assert_eq!(Cost::new(Some(36.0), None, wall, None).dollars, None);
    }

    #[test]
    fn only_known_kinds_of_file_are_stored() {
        assert_eq!(content_type(Path::new("a/seg_001.m4s")), Some("video/iso.segment"));
        assert_eq!(
            content_type(Path::new("a/master.m3u8")),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(content_type(Path::new("a/x.sh")), None);
        assert_eq!(content_type(Path::new("a/noext")), None);
    }
}

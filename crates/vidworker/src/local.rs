//! The commands that work on local files: `vidworker process` and
//! `vidworker probe`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use processor::{CancelFlag, ErrorClass, MediaInfo, Progress, RenditionSpec, Report};

use crate::flags::RenditionArgs;

/// Exit code for an input that cannot be processed (bad, refused, over a
/// limit, over the time limit). 1 is any other failure.
const EXIT_BAD_INPUT: u8 = 3;
/// Exit code for options that cannot be used: clap's for a usage error,
/// and ours for a watermark or card file that does not decode.
const EXIT_USAGE: u8 = 2;

/// `vidworker process`: one file into a rendition, with progress; Ctrl-C
/// cancels cleanly.
pub fn process_command(input: &Path, output: Option<PathBuf>, rendition: &RenditionArgs) -> anyhow::Result<ExitCode> {
    let spec = rendition.to_spec()?;
    let output = output.unwrap_or_else(|| default_output(input));
    let cancel = CancelFlag::new();
    cancel_on_ctrl_c(cancel.clone())?;
    Ok(match process(input, &output, &spec, &cancel) {
        Ok(report) => {
            print(&format!("{}\n", summary(&report)));
            ExitCode::SUCCESS
        }
        Err(e) => input_failure(&e),
    })
}

/// `vidworker probe`: what a file contains, as a table or JSON.
pub fn probe_command(input: &Path, json: bool) -> ExitCode {
    match processor::probe(input) {
        Ok(info) => {
            let text = if json {
                format!("{}\n", describe_json(&info))
            } else {
                describe(input, &info)
            };
            print(&text);
            ExitCode::SUCCESS
        }
        Err(e) => input_failure(&e),
    }
}

/// The one-line error and the exit code that says who is to blame: the
/// input (3, a timeout included), the options (2, like any usage error: a
/// watermark or card file that cannot be used), or the machine (1).
fn input_failure(e: &processor::Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(match e.class() {
        ErrorClass::Input | ErrorClass::Timeout => EXIT_BAD_INPUT,
        ErrorClass::Spec => EXIT_USAGE,
        ErrorClass::Environment => 1,
    })
}

/// Ctrl-C raises the cancel flag: the transcode stops within a frame and
/// leaves no partial file.
fn cancel_on_ctrl_c(cancel: CancelFlag) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            });
        })
        .context("starting the signal handler")?;
    Ok(())
}

/// Where `vidworker process INPUT` writes by default:
/// `processed/<input stem>.mp4` under the current directory.
fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map_or_else(|| "output".into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from("processed").join(format!("{stem}.mp4"))
}

/// Runs one transcode with a progress bar on a terminal, or a plain line
/// every 10 % otherwise. `cancel` stops it cleanly (Ctrl-C).
fn process(input: &Path, output: &Path, spec: &RenditionSpec, cancel: &CancelFlag) -> Result<Report, processor::Error> {
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| processor::Error::OutputIo {
            path: output.to_owned(),
            source,
        })?;
    }
    let interactive = std::io::stderr().is_terminal();
    let bar = if interactive {
        let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {percent:>3}% {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(input.display().to_string());
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut last_decile = 0;
    let name = input.display().to_string();
    let result = processor::process(
        input,
        output,
        spec,
        |p: Progress| {
            let fraction = p.fraction();
            if interactive {
                bar.set_position((fraction * 1000.0) as u64);
                bar.set_message(format!("{} frames, {:.1} s", p.frames, p.position.as_secs_f64()));
            } else {
                let decile = (fraction * 10.0).floor() as u32;
                if decile > last_decile {
                    last_decile = decile;
                    eprintln!(
                        "{name}: {}% ({} frames, {:.1} s)",
                        decile * 10,
                        p.frames,
                        p.position.as_secs_f64()
                    );
                }
            }
        },
        cancel,
    );
    bar.finish_and_clear();
    result
}

/// The one-line summary printed after a successful `process`.
fn summary(report: &Report) -> String {
    let mut text = headline(report);
    for r in &report.renditions {
        text.push_str(&format!(
            "\n  {:<6} {}x{} {}, {} kb/s on average, {} kb/s at the peak second: {}",
            r.name,
            r.width,
            r.height,
            human_bytes(r.bytes),
            r.average_kbps,
            r.peak_kbps,
            r.path.display()
        ));
    }
    if let Some(master) = &report.hls {
        text.push_str(&format!("\n  hls    {}", master.display()));
    }
    if let Some(sb) = &report.storyboard {
        text.push_str(&format!(
            "\n  storyboard {} thumbnails: {}, {}",
            sb.thumbnails,
            sb.sprite.display(),
            sb.vtt.display()
        ));
    }
    text
}

/// The first line: the primary rendition.
fn headline(report: &Report) -> String {
    format!(
        "{}: {:.2} s, {}x{} @ {} fps, {}{}{}, {:.1}x real time ({:.1} s)",
        report.output.display(),
        report.duration.as_secs_f64(),
        report.width,
        report.height,
        report.frame_rate,
        human_bytes(report.bytes),
        if report.has_audio { ", with audio" } else { "" },
        report
            .poster
            .as_ref()
            .map_or_else(String::new, |p| format!(", poster {}", p.display())),
        report.speed,
        report.elapsed.as_secs_f64(),
    )
}

/// `probe` output for a person.
fn describe(path: &Path, info: &MediaInfo) -> String {
    let mut out = String::new();
    let duration = info
        .duration
        .map_or_else(|| "unknown".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()));
    let rate = info
        .frame_rate
        .map_or_else(|| "unknown".to_owned(), |r| format!("{r} ({:.3})", r.as_f64()));
    let rows = [
        ("file", path.display().to_string()),
        ("container", info.container.clone()),
        ("size", human_bytes(info.size_bytes)),
        ("duration", duration),
        ("video codec", info.video_codec.clone()),
        ("coded size", format!("{}x{}", info.coded_width, info.coded_height)),
        (
            "display size",
            format!("{}x{}", info.display_width, info.display_height),
        ),
        (
            "sample aspect",
            format!("{}:{}", info.sample_aspect_ratio.num, info.sample_aspect_ratio.den),
        ),
        ("rotation", format!("{}°", info.rotation)),
        ("frame rate", rate),
        (
            "pixel format",
            format!(
                "{}{}{}",
                info.pixel_format,
                if info.full_range { ", full range" } else { "" },
                if info.hdr { ", HDR" } else { "" }
            ),
        ),
        ("transfer", info.color_transfer.clone()),
        ("audio", if info.has_audio { "yes" } else { "no" }.to_owned()),
        (
            "bit rate",
            info.bit_rate
                .map_or_else(|| "unknown".to_owned(), |b| format!("{:.0} kb/s", b as f64 / 1000.0)),
        ),
    ];
    for (k, v) in rows {
        out.push_str(&format!("{k:>14}: {v}\n"));
    }
    out
}

/// `probe --json` output.
fn describe_json(info: &MediaInfo) -> String {
    serde_json::to_string_pretty(info).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Bytes for a person: `4.2 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Writes to stdout, ignoring a closed pipe (`vidworker probe x | head`).
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_goes_to_processed_with_the_stem() {
        assert_eq!(
            default_output(Path::new("/tmp/clips/dunk.MOV")),
            PathBuf::from("processed/dunk.mp4")
        );
    }

    #[test]
    fn bytes_read_like_a_file_manager() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(4_200_000), "4.2 MB");
    }
}

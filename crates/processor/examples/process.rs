//! Renders one upload with the default rendition and prints what it cost;
//! the smallest way to time the processor on a real file without the
//! worker around it:
//!
//! ```text
//! cargo build --release -p vidworker-processor --example process
//! /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KiB" \
//!     target/release/examples/process upload.mp4 out.mp4
//! ```

use std::path::Path;
use std::process::ExitCode;

use processor::{CancelFlag, RenditionSpec};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: process INPUT OUTPUT");
        return ExitCode::from(2);
    };
    match processor::process(
        Path::new(input),
        Path::new(output),
        &RenditionSpec::default(),
        |_| {},
        &CancelFlag::new(),
    ) {
        Ok(report) => {
            println!(
                "{}: {} frames, {:.1} s of video in {:.2} s ({:.2}x); source matrix {}, {} range",
                report.output.display(),
                report.frames,
                report.duration.as_secs_f64(),
                report.elapsed.as_secs_f64(),
                report.speed,
                report.input.color_space,
                if report.input.full_range { "full" } else { "tv" },
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

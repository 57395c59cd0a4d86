//! The `vidworker` binary: parses the command line, sets up logging and
//! hands over to the library. Errors are printed once, on one line.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use processor::CancelFlag;
use worker::cli::{Cli, Command};
use worker::{local, telemetry};

/// Exit code for an input that cannot be processed (bad, refused, over a
/// limit); 2 is clap's usage error; 1 is any other failure.
const EXIT_BAD_INPUT: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, false);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Process {
            input,
            output,
            rendition,
        } => {
            let spec = rendition.to_spec()?;
            let output = output.unwrap_or_else(|| local::default_output(&input));
            let cancel = CancelFlag::new();
            let on_signal = cancel.clone();
            ctrlc_cancels(on_signal)?;
            match local::process(&input, &output, &spec, &cancel) {
                Ok(report) => {
                    local::print(&format!("{}\n", local::summary(&report)));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(if e.is_permanent() { EXIT_BAD_INPUT } else { 1 }))
                }
            }
        }
        Command::Probe { input, json } => match processor::probe(&input) {
            Ok(info) if json => {
                local::print(&format!("{}\n", local::describe_json(&info)));
                Ok(ExitCode::SUCCESS)
            }
            Ok(info) => {
                local::print(&local::describe(&input, &info));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(if e.is_permanent() { EXIT_BAD_INPUT } else { 1 }))
            }
        },
    }
}

/// Ctrl-C raises the cancel flag: the transcode stops within a frame and
/// leaves no partial file.
fn ctrlc_cancels(cancel: CancelFlag) -> anyhow::Result<()> {
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

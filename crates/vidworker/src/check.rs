//! `vidworker check`: the worker's settings and everything it will talk
//! to, each reported on one line, all of them, with a non-zero exit when
//! any is wrong. Run it on an instance after a deploy, or with
//! `--env-file /etc/vidworker/env` as the service would see its settings.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args as _, FromArgMatches as _};

use crate::flags::RunArgs;

/// Runs the checks with the settings of the environment, or re-runs itself
/// with those of `env_file` added (systemd's `EnvironmentFile` syntax).
pub fn check(env_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    if let Some(path) = env_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let status = std::process::Command::new(std::env::current_exe().context("finding this binary")?)
            .arg("check")
            .envs(env_file_vars(&text))
            .status()
            .context("running the checks")?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let command = RunArgs::augment_args(clap::Command::new("vidworker check").no_binary_name(true));
    let args = command
        .clone()
        .try_get_matches_from(Vec::<String>::new())
        .and_then(|m| RunArgs::from_arg_matches(&m));
    let args = match args {
        Ok(args) => args,
        Err(e) => {
            let problems = settings_problems(&command, &e);
            for problem in &problems {
                println!("FAIL settings: {problem}");
            }
            return Ok(summary(problems.len()));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_checks(args))
}

async fn run_checks(args: RunArgs) -> anyhow::Result<ExitCode> {
    let runner = match crate::serve::runner(&args, &args.aws.clients().await).await {
        Ok(runner) => runner,
        Err(e) => {
            println!("FAIL settings: {e:#}");
            return Ok(summary(1));
        }
    };
    println!("ok   settings: {}", runner.settings_summary());
    let mut runner = runner;
    let findings = runner.preflight().await;
    let mut problems = 0;
    for finding in &findings {
        match &finding.outcome {
            Ok(what) => println!("ok   {}: {what}", finding.subject),
            Err(why) => {
                problems += 1;
                println!("FAIL {}: {why}", finding.subject);
            }
        }
    }
    if problems == 0 {
        println!("vidworker check: all {} checks passed", findings.len() + 1);
        return Ok(ExitCode::SUCCESS);
    }
    Ok(summary(problems))
}

/// Each missing setting, named by its variable; any other error of the
/// command line in one line.
fn settings_problems(command: &clap::Command, e: &clap::Error) -> Vec<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let missing = match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(args))) => args.clone(),
        _ => {
            let text = e.to_string();
            return vec![
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_owned(),
            ];
        }
    };
    missing
        .iter()
        .map(|shown| {
            // "--database-url <DATABASE_URL>"
            let long = shown.trim_start_matches("--").split(' ').next().unwrap_or_default();
            let arg = command.get_arguments().find(|a| a.get_long() == Some(long));
            let env = arg
                .and_then(|a| a.get_env())
                .map_or_else(|| shown.clone(), |e| e.to_string_lossy().into_owned());
            let alternative = if long == "database-url" {
                " (nor DATABASE_SECRET_ARN)"
            } else {
                ""
            };
            format!("{env} is not set{alternative} (--{long})")
        })
        .collect()
}

fn summary(problems: usize) -> ExitCode {
    println!("vidworker check: {problems} problem(s)");
    ExitCode::FAILURE
}

/// `KEY=VALUE` lines, `#` comments and blank lines skipped, one level of
/// surrounding quotes removed (what systemd's `EnvironmentFile` takes).
fn env_file_vars(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(v);
            (k.trim().to_owned(), unquoted.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_read_like_systemd_reads_them() {
        let vars = env_file_vars("# comment\n\nA=1\nB='two words'\n C = \"x=y\" \n;old\n");
        assert_eq!(
            vars,
            [("A", "1"), ("B", "two words"), ("C", "x=y")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }
}

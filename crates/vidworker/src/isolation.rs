//! The flags of transcode isolation: where each transcode runs, how
//! strictly it is sandboxed, and how much memory it may use.

use worker::config::DEFAULT_MEMORY_PER_JOB;
use worker::isolate::{ChildSettings, Isolation};

/// The hidden command a worker starts each transcode child with.
pub const CHILD_COMMAND: &str = "transcode-job";

/// Where transcodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    /// A sandboxed child process per transcode.
    Child,
    /// A thread of the worker's process: no isolation (for debugging).
    InProcess,
}

/// How strictly the children are sandboxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxArg {
    /// Every layer the kernel offers; the log and /metrics say which.
    BestEffort,
    /// Every layer, or the worker refuses to start.
    Required,
}

/// How each transcode is isolated.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Isolation")]
pub struct IsolationArgs {
    /// Where each transcode runs: in a sandboxed child process (a crash,
    /// a memory blow-up or an exploit hurts its own job only) or on a
    /// thread of the worker.
    #[arg(long, env = "ISOLATION", value_enum, default_value_t = IsolationArg::Child)]
    pub isolation: IsolationArg,
    /// `required` refuses to start unless every sandbox layer (limits,
    /// capabilities, Landlock, seccomp) is in force.
    #[arg(long, env = "SANDBOX", value_enum, default_value_t = SandboxArg::BestEffort)]
    pub sandbox: SandboxArg,
    /// Memory one transcode may use above the program itself, enforced by
    /// the kernel on each child (an address-space limit); a job over it
    /// fails as `over_memory`. Also sizes the default concurrency. Bytes,
    /// or with K, M or G (binary); 0 for no limit.
    #[arg(long, env = "MEMORY_PER_JOB", value_parser = parse_size, default_value_t = DEFAULT_MEMORY_PER_JOB, value_name = "BYTES")]
    pub memory_per_job: u64,
}

impl IsolationArgs {
    /// The worker's isolation setting: children of this very binary.
    pub fn to_isolation(&self) -> Isolation {
        match self.isolation {
            IsolationArg::InProcess => Isolation::InProcess,
            IsolationArg::Child => Isolation::Child(ChildSettings {
                // The running binary even if a deploy replaced the file.
                program: "/proc/self/exe".into(),
                args: vec![CHILD_COMMAND.to_owned()],
                memory: (self.memory_per_job > 0).then_some(self.memory_per_job),
                require_sandbox: self.sandbox == SandboxArg::Required,
            }),
        }
    }
}

/// `1073741824`, `1024M`, `1G`: binary multiples.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (bytes, or a number with K, M or G)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("150M"), Ok(150 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}

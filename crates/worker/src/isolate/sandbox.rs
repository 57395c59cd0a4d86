//! The sandbox a transcode child puts itself in before it opens the input,
//! in layers that each stop something on their own:
//!
//! 1. **Limits** (`setrlimit`): address space (the job's memory budget
//!    above what is mapped at start), the size of any file written, open
//!    files, no core dumps. The kernel enforces them: an allocation past
//!    the budget fails, a file past the size gets `SIGXFSZ`.
//! 2. **Capabilities**: a child of a worker running as root drops them all,
//!    and `no_new_privs` stops it gaining any.
//! 3. **Landlock**: the child may read its input, the rendition's assets
//!    and the system's libraries, and write only in its job directory; TCP
//!    connects and binds are refused (where the kernel's Landlock handles
//!    the network, 6.7 and later).
//! 4. **seccomp**: system calls a transcode never makes are refused with
//!    `EPERM`: sockets, `execve`, `ptrace` and reading other processes'
//!    memory, new processes (only threads may be cloned), signals to other
//!    processes, raising its limits, namespaces, mounts, `bpf`, `io_uring`,
//!    keyrings, kernel modules.
//!
//! A layer the kernel lacks (a container without Landlock) is reported, not
//! fatal: [`apply`] says which layers are in force, and the worker decides
//! (`SANDBOX=required` refuses to start without all of them).
//!
//! The seccomp list is a deny list rather than an allow list: FFmpeg,
//! x264 and glibc make different system calls across versions and
//! machines, and an allow list that misses one crashes every job on the
//! next upgrade. What a transcode must never do is denied by name.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    path_beneath_rules,
};
use rustix::process::{Resource, Rlimit};
use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};
use serde::{Deserialize, Serialize};

/// What a child may touch, and its limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Files and directories it may read (the input, the assets).
    pub read: Vec<PathBuf>,
    /// Directories it may read and write in (its job directory).
    pub write: Vec<PathBuf>,
    /// Address space it may add to what is mapped when the limits are
    /// set (the program and its libraries); `None`: unlimited.
    pub memory: Option<u64>,
    /// The largest file it may write, in bytes.
    pub file_size: u64,
    /// The most files it may have open at once.
    pub open_files: u64,
}

/// The system directories every child may read: the shared libraries (a
/// decoder may load a helper library late) and the CPU topology glibc
/// and x264 read to size their thread pools.
const SYSTEM_READ: [&str; 6] = [
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/share/zoneinfo",
    "/sys/devices/system/cpu",
];

/// Which layers are in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// The resource limits are set.
    pub limits: bool,
    /// No capabilities are left, and none can be gained.
    pub capabilities: bool,
    /// How much of the Landlock ruleset the kernel enforces.
    pub landlock: Coverage,
    /// The seccomp filter is installed.
    pub seccomp: bool,
}

impl Layers {
    /// Every layer in force, Landlock fully.
    pub fn complete(&self) -> bool {
        self.limits && self.capabilities && self.landlock == Coverage::Full && self.seccomp
    }

    /// The layers for a log line: `limits,capabilities,landlock,seccomp`,
    /// `landlock(partial)`, or `none`.
    pub fn describe(&self) -> String {
        let landlock = match self.landlock {
            Coverage::Full => Some("landlock"),
            Coverage::Partial => Some("landlock(partial)"),
            Coverage::None => None,
        };
        let names: Vec<&str> = [
            self.limits.then_some("limits"),
            self.capabilities.then_some("capabilities"),
            landlock,
            self.seccomp.then_some("seccomp"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }
}

/// How much of a layer the kernel enforces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Coverage {
    /// All of it.
    Full,
    /// Some rights (an older kernel's Landlock ABI).
    Partial,
    /// None: the kernel lacks it.
    #[default]
    None,
}

/// A layer that failed in a way that is not the kernel lacking it.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A limit could not be set.
    #[error("cannot set the {what} limit: {source}")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The process's memory map could not be read.
    #[error("cannot measure the mapped address space: {0}")]
    Measure(std::io::Error),
    /// The capabilities could not be dropped.
    #[error("cannot drop capabilities: {0}")]
    Capabilities(std::io::Error),
    /// The Landlock ruleset could not be built.
    #[error("cannot build the Landlock ruleset: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// The seccomp filter could not be built.
    #[error("cannot build the seccomp filter: {0}")]
    Seccomp(String),
}

/// Applies `policy` to the calling process, in the order of the module
/// docs, and says which layers are in force. Call it on the only thread:
/// threads started earlier would not be confined.
pub fn apply(policy: &Policy) -> Result<Layers, SandboxError> {
    if let Ok(status) = File::open("/proc/self/status") {
        let _ = STATUS.set(status);
    }
    set_limits(policy)?;
    let capabilities = drop_capabilities()?;
    let landlock = restrict_files(policy)?;
    let seccomp = match filter_syscalls() {
        Ok(()) => true,
        // Built but refused by the kernel: it lacks seccomp filters.
        Err(SyscallFilter::Unavailable(e)) => {
            tracing::debug!(error = %e, "seccomp is not available");
            false
        }
        Err(SyscallFilter::Build(e)) => return Err(SandboxError::Seccomp(e)),
    };
    Ok(Layers {
        limits: true,
        capabilities,
        landlock,
        seccomp,
    })
}

fn set_limits(policy: &Policy) -> Result<(), SandboxError> {
    let set = |what, resource, value: u64| {
        let limit = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        rustix::process::setrlimit(resource, limit).map_err(|e| SandboxError::Limit { what, source: e.into() })
    };
    set("core dump", Resource::Core, 0)?;
    set("open files", Resource::Nofile, policy.open_files)?;
    set("file size", Resource::Fsize, policy.file_size)?;
    if let Some(memory) = policy.memory {
        let mapped = mapped_bytes().map_err(SandboxError::Measure)?;
        set("address space", Resource::As, mapped.saturating_add(memory))?;
    }
    Ok(())
}

/// The address space mapped now (`/proc/self/statm`'s first field).
fn mapped_bytes() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected /proc/self/statm: {statm:?}")))?;
    Ok(pages * rustix::param::page_size() as u64)
}

/// How close to its address-space limit the process must have come for a
/// failure to be put down to memory: libraries report a refused
/// allocation in their own words (x264: "Generic error in an external
/// library"), and the one refused may be this large.
const EXHAUSTED_MARGIN: u64 = 64 << 20;

/// `/proc/self/status`, opened before Landlock closes `/proc`.
static STATUS: OnceLock<File> = OnceLock::new();

/// What a transcode took from the machine, measured by the child itself:
/// it runs one job, so its own counters are the job's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time of every thread of the child, user and system, in seconds.
    pub cpu_seconds: f64,
    /// Its peak resident memory (`VmHWM`), in bytes, if it could be read.
    pub peak_rss_bytes: Option<u64>,
}

/// The peak address space so far (`VmPeak`), in bytes.
pub fn peak_address_space() -> Option<u64> {
    status_bytes("VmPeak:")
}

/// What this process took so far: its CPU time (every thread, the ended
/// ones included) and its peak resident memory.
pub fn usage() -> Usage {
    let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Usage {
        cpu_seconds: cpu.tv_sec as f64 + cpu.tv_nsec as f64 / 1e9,
        peak_rss_bytes: status_bytes("VmHWM:"),
    }
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let mut buf = vec![0; 4096];
    let n = STATUS.get()?.read_at(&mut buf, 0).ok()?;
    let status = String::from_utf8_lossy(&buf[..n]);
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib << 10)
}

/// Whether the process came within [`EXHAUSTED_MARGIN`] of its
/// address-space limit (`VmPeak` against `RLIMIT_AS`): a failure then is
/// most likely an allocation the limit refused.
pub fn memory_exhausted() -> bool {
    let Some(limit) = rustix::process::getrlimit(Resource::As).current else {
        return false;
    };
    let peak = peak_address_space();
    let exhausted = peak.is_some_and(|peak| peak.saturating_add(EXHAUSTED_MARGIN) >= limit);
    tracing::debug!(peak, limit, exhausted, "address space at the failure");
    exhausted
}

/// Drops every capability and sets `no_new_privs`; says whether none is
/// left.
fn drop_capabilities() -> Result<bool, SandboxError> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    rustix::thread::set_no_new_privs(true).map_err(|e| SandboxError::Capabilities(e.into()))?;
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none).map_err(|e| SandboxError::Capabilities(e.into()))?;
    let left = rustix::thread::capabilities(None).map_err(|e| SandboxError::Capabilities(e.into()))?;
    Ok(left.effective.is_empty() && left.permitted.is_empty())
}

/// The Landlock ABI the ruleset is written for; a kernel with an older
/// one enforces what it knows (best effort), and says so.
const LANDLOCK_ABI: ABI = ABI::V5;

fn restrict_files(policy: &Policy) -> Result<Coverage, SandboxError> {
    let existing = |paths: &mut dyn Iterator<Item = &Path>| -> Vec<PathBuf> {
        paths.filter(|p| p.exists()).map(Path::to_path_buf).collect()
    };
    let read = existing(
        &mut policy
            .read
            .iter()
            .map(PathBuf::as_path)
            .chain(SYSTEM_READ.iter().map(Path::new)),
    );
    let write = existing(&mut policy.write.iter().map(PathBuf::as_path));
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))?
        .handle_access(AccessNet::from_all(LANDLOCK_ABI))?
        .create()?
        .add_rules(path_beneath_rules(&read, AccessFs::from_read(LANDLOCK_ABI)))?
        .add_rules(path_beneath_rules(&write, AccessFs::from_all(LANDLOCK_ABI)))?
        .restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Coverage::Full,
        RulesetStatus::PartiallyEnforced => Coverage::Partial,
        RulesetStatus::NotEnforced => Coverage::None,
    })
}

enum SyscallFilter {
    Build(String),
    Unavailable(String),
}

/// Installs the two seccomp filters: `clone3` answers `ENOSYS` (so glibc
/// falls back to `clone`, whose flags a filter can read), and the deny
/// list answers `EPERM`.
fn filter_syscalls() -> Result<(), SyscallFilter> {
    let build = |e: &dyn std::fmt::Display| SyscallFilter::Build(e.to_string());
    let arch = std::env::consts::ARCH.try_into().map_err(|e| build(&e))?;
    let clone3: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, Vec::new())].into();
    let filters = [
        (clone3, libc::ENOSYS),
        (
            denied(rustix::process::getpid().as_raw_nonzero().get()).map_err(|e| build(&e))?,
            libc::EPERM,
        ),
    ];
    let mut programs = Vec::new();
    for (rules, errno) in filters {
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
            .map_err(|e| build(&e))?;
        let program: seccompiler::BpfProgram = filter.try_into().map_err(|e| build(&e))?;
        programs.push(program);
    }
    for program in &programs {
        seccompiler::apply_filter(program).map_err(|e| SyscallFilter::Unavailable(e.to_string()))?;
    }
    Ok(())
}

/// The deny list: each system call refused, unconditionally or when its
/// arguments say so.
fn denied(own_pid: i32) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let always = [
        // The network and other processes.
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_tkill,
        libc::SYS_rt_sigqueueinfo,
        libc::SYS_rt_tgsigqueueinfo,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_pidfd_send_signal,
        // Its own limits and confinement.
        libc::SYS_setrlimit,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_personality,
        // Kernel surfaces a transcode never needs.
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_fork,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_vfork,
    ];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = always.into_iter().map(|n| (n, Vec::new())).collect();
    let when = |arg, len, op, value| -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        Ok(vec![SeccompRule::new(vec![SeccompCondition::new(
            arg, len, op, value,
        )?])?])
    };
    let pid = u64::from(own_pid.unsigned_abs());
    // Signals only to itself (abort() raises SIGABRT with tgkill).
    rules.insert(libc::SYS_kill, when(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, pid)?);
    rules.insert(
        libc::SYS_tgkill,
        when(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, pid)?,
    );
    // Threads, never processes.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        when(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(thread), 0)?,
    );
    // Reading a limit is fine (glibc does), setting one is not.
    rules.insert(
        libc::SYS_prlimit64,
        when(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, 0)?,
    );
    Ok(rules)
}

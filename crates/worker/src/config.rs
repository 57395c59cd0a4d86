//! The validated settings of a running worker ([`WorkerSettings`]). The
//! command line (flags and environment) lives in the binary and produces
//! them; every default is defined here, once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use processor::RenditionSpec;

/// A configuration value that cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl From<processor::Error> for ConfigError {
    fn from(e: processor::Error) -> Self {
        ConfigError(e.to_string())
    }
}

/// How a worker runs jobs.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Name written into `claimed_by`.
    pub worker_id: String,
    /// Jobs transcoding at once.
    pub concurrency: usize,
    /// Jobs taken beyond `concurrency`: they download while others
    /// transcode, and upload while the next one transcodes, so the cores
    /// never wait for the network.
    pub prefetch: usize,
    /// Visibility of a running job's message; its lease is 90 % of it.
    pub visibility_timeout: Duration,
    /// Attempts, counted in the row (deliberate hand-backs excluded), after
    /// which a video that keeps failing transiently is given up: marked
    /// failed and its message moved to the dead-letter queue. The queue's
    /// own `maxReceiveCount` should be well above it.
    pub max_attempts: u32,
    /// Long-polling wait (1 to 20 s).
    pub receive_wait: Duration,
    /// Grace period at shutdown.
    pub shutdown_grace: Duration,
    /// First retry delay after a transient failure.
    pub retry_backoff: Duration,
    /// How long a job waits for S3 or PostgreSQL to come back.
    pub outage_patience: Duration,
    /// Allowed prefix of original keys; empty allows any key.
    pub originals_prefix: String,
    /// Prefix of rendition keys.
    pub processed_prefix: String,
    /// Where job directories go.
    pub temp_dir: PathBuf,
    /// How long a message waits after a configuration error (permissions,
    /// a missing bucket): an operator has to act first.
    pub configuration_delay: Duration,
    /// How long a message for a video the database does not know yet is
    /// retried (the platform may send before its insert is visible) before
    /// it is dead-lettered.
    pub unknown_video_patience: Duration,
    /// Between two reconciliation passes; zero turns the reconciler off.
    pub reconcile_interval: Duration,
    /// How long a pending video may go untouched before its message is
    /// sent again.
    pub stranded_after: Duration,
    /// Re-sends of a stranded video before it is failed.
    pub max_resends: u32,
    /// Start even when the database has no videos but the queue has
    /// messages (normally a sign of the wrong `DATABASE_URL`).
    pub allow_empty_database: bool,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` for
    /// nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// At most one progress write per job this often.
    pub progress_interval: Duration,
    /// Where each transcode runs.
    pub isolation: crate::isolate::Isolation,
    /// Dollars per vCPU-hour, to price each job's CPU time in its cost
    /// (`COST_PER_VCPU_HOUR`); `None` reports CPU seconds only.
    pub vcpu_hour_price: Option<f64>,
    /// The rendition, its ladder and extras.
    pub spec: RenditionSpec,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            worker_id: default_worker_id(),
            concurrency: default_concurrency(),
            prefetch: 1,
            visibility_timeout: Duration::from_secs(900),
            max_attempts: 3,
            receive_wait: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(90),
            retry_backoff: Duration::from_secs(10),
            outage_patience: Duration::from_secs(3600),
            originals_prefix: "originals/".into(),
            processed_prefix: "processed/".into(),
            temp_dir: std::env::temp_dir(),
            configuration_delay: Duration::from_secs(300),
            unknown_video_patience: Duration::from_secs(300),
            reconcile_interval: Duration::from_secs(60),
            stranded_after: Duration::from_secs(3600),
            max_resends: 3,
            allow_empty_database: false,
            metrics_addr: None,
            progress_interval: Duration::from_secs(5),
            isolation: crate::isolate::Isolation::default(),
            vcpu_hour_price: None,
            spec: RenditionSpec::default(),
        }
    }
}

/// `hostname:pid`.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}:{}", std::process::id())
}

/// Memory one job may need at its peak: two jobs of the reference upload
/// (1080p30, 15 Mb/s), one thread each, peak at 444 to 500 MiB for the
/// whole worker (`benches/worker-throughput.sh`), 4K sources more; about
/// twice that is left for the rest.
const MEMORY_PER_JOB: u64 = 512 << 20;

/// The default `MEMORY_PER_JOB`: the address space one transcode child may
/// add above the program. Address space, not resident memory: it counts
/// every thread's stack and glibc's reservations too.
pub const DEFAULT_MEMORY_PER_JOB: u64 = 1536 << 20;

/// One job per core, each with one core's threads, as long as the memory
/// holds `MEMORY_PER_JOB` per job; at least one.
///
/// Measured on 2 cores, `benches/worker-throughput.sh 4`, videos per hour
/// against the CLI back to back (1 Dec 2026): one job with both cores
/// 0.86x, 0.87x, 0.97x; two jobs of one core each 1.01x, 1.07x, 1.11x,
/// 1.15x, with about 6 % less CPU per video (medians 34.5 s against
/// 36.6 s). Frame-threaded x264 spends more CPU per frame, and a job's
/// start (open, lookahead filling) and end (draining, faststart, upload)
/// leave cores idle that the other job fills. The price is latency: a
/// lone job on an idle machine uses one core. WORKER_CONCURRENCY=1 gives
/// it every core. Machines with 4 and 8 cores were not available to
/// measure; the same reasons should hold there.
pub fn default_concurrency() -> usize {
    concurrency_for(cores(), total_memory())
}

/// [`default_concurrency`] for a `MEMORY_PER_JOB` address-space limit of
/// `per_job` (0: none): the limit allows that much, while resident memory
/// stays near `MEMORY_PER_JOB`, so the smaller of the two sizes jobs.
pub fn concurrency_for_memory(per_job: u64) -> usize {
    let resident = if per_job == 0 {
        MEMORY_PER_JOB
    } else {
        per_job.min(MEMORY_PER_JOB)
    };
    concurrency_for_each(cores(), total_memory(), resident)
}

fn concurrency_for(cores: usize, memory: Option<u64>) -> usize {
    concurrency_for_each(cores, memory, MEMORY_PER_JOB)
}

fn concurrency_for_each(cores: usize, memory: Option<u64>, per_job: u64) -> usize {
    let by_memory = memory.map_or(usize::MAX, |bytes| (bytes / per_job.max(1)) as usize);
    cores.min(by_memory).max(1)
}

/// The machine's memory (MemTotal), or the limit of this process's own
/// cgroup if lower (under systemd, the unit's `MemoryMax`/`MemoryHigh`).
fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?
        * 1024;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limit = cgroup_memory_limit(Path::new("/sys/fs/cgroup"), &own);
    Some(limit.map_or(total, |l| l.min(total)))
}

/// The lowest memory limit on the way from this process's cgroup (as
/// `/proc/self/cgroup` names it) up to the root: a parent's limit binds its
/// children too. cgroup v2 (`0::/path`, the unified hierarchy at `root` or
/// `root/unified` on a hybrid system) counts `memory.max` and
/// `memory.high` (where the kernel starts reclaiming and throttling, so
/// jobs are sized below it); v1 (`N:memory:/path`) `memory.limit_in_bytes`.
fn cgroup_memory_limit(root: &Path, own: &str) -> Option<u64> {
    let mut places: Vec<(PathBuf, &[&str])> = Vec::new();
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            for unified in [root.to_path_buf(), root.join("unified")] {
                if unified.join("cgroup.controllers").exists() {
                    places.push((unified.join(path), &["memory.max", "memory.high"]));
                    break;
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            places.push((root.join("memory").join(path), &["memory.limit_in_bytes"]));
        }
    }
    let mut lowest: Option<u64> = None;
    for (leaf, files) in places {
        let mut dir = Some(leaf.as_path());
        while let Some(d) = dir.filter(|d| d.starts_with(root)) {
            for file in files {
                // "max" (no limit) and missing files do not parse.
                let value = std::fs::read_to_string(d.join(file)).ok();
                if let Some(bytes) = value.and_then(|v| v.trim().parse::<u64>().ok()) {
                    lowest = Some(lowest.map_or(bytes, |l| l.min(bytes)));
                }
            }
            dir = d.parent();
        }
    }
    lowest
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl WorkerSettings {
    /// Checks every value and fills in what follows from the others (each
    /// job's share of the cores when the spec leaves threads at 0).
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        let bad = |msg: String| Err(ConfigError(msg));
        if !(1..=64).contains(&self.concurrency) {
            return bad(format!("WORKER_CONCURRENCY {} is outside 1 to 64", self.concurrency));
        }
        if self.prefetch > self.concurrency.max(4) {
            return bad(format!(
                "WORKER_PREFETCH {} is above max(WORKER_CONCURRENCY, 4): messages would wait hidden \
                 while other workers are free",
                self.prefetch
            ));
        }
        let visibility = self.visibility_timeout.as_secs();
        if !(1..=12 * 3600).contains(&visibility) {
            return bad(format!("VISIBILITY_TIMEOUT {visibility} s is outside 1 s to 12 h"));
        }
        let wait = self.receive_wait.as_secs();
        if !(1..=20).contains(&wait) {
            // 0 would make an idle worker poll SQS in a tight loop.
            return bad(format!("RECEIVE_WAIT_SECONDS {wait} is outside 1 to 20"));
        }
        if self.max_attempts == 0 {
            return bad("MAX_ATTEMPTS must be at least 1".into());
        }
        if self.processed_prefix.is_empty() {
            return bad("PROCESSED_PREFIX must not be empty: renditions would mix with originals".into());
        }
        match self.spec.limits.timeout {
            Some(t) if t < Duration::from_secs(11 * 3600 + 1800) => {}
            _ => {
                return bad(
                    "JOB_TIMEOUT must be set below 11.5 hours: SQS keeps a message invisible for 12 hours at most"
                        .into(),
                );
            }
        }
        self.retry_backoff = self.retry_backoff.max(Duration::from_secs(1));
        // A write per job per second at most: the database serves the fleet.
        self.progress_interval = self.progress_interval.max(Duration::from_secs(1));
        // Jobs share the cores: each gets its share of FFmpeg threads.
        if self.spec.threads == 0 {
            self.spec.threads = (cores() / self.concurrency).max(1) as u32;
        }
        self.spec.validate()?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_give_each_job_its_share_of_the_cores() {
        let s = WorkerSettings::default().validated().expect("defaults validate");
        assert!(s.spec.threads >= 1);
        assert!(s.concurrency >= 1 && s.concurrency <= cores());
        assert_eq!(s.spec.threads as usize, (cores() / s.concurrency).max(1));
        assert_eq!(s.visibility_timeout, Duration::from_secs(900));
        assert!(s.worker_id.ends_with(&format!(":{}", std::process::id())));
    }

    #[test]
    fn one_job_per_core_while_the_memory_holds_them() {
        const GIB: u64 = 1 << 30;
        // A t3.small: 2 vCPUs, 2 GiB.
        assert_eq!(concurrency_for(2, Some(2 * GIB)), 2);
        assert_eq!(concurrency_for(8, Some(32 * GIB)), 8);
        // 8 cores in a 1 GiB container: two jobs.
        assert_eq!(concurrency_for(8, Some(GIB)), 2);
        assert_eq!(concurrency_for(2, Some(300 << 20)), 1);
        assert_eq!(concurrency_for(4, None), 4);
        assert!(total_memory().is_some_and(|m| m > 64 << 20), "/proc/meminfo read");
    }

    #[test]
    fn the_limit_is_the_lowest_of_the_own_cgroup_and_its_parents() {
        const MIB: u64 = 1 << 20;
        let root = tempfile::tempdir().expect("dir");
        let write = |rel: &str, text: &str| {
            let path = root.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        // cgroup v2, as systemd lays out a unit with MemoryHigh and MemoryMax.
        write("cgroup.controllers", "memory pids");
        write("system.slice/memory.max", "max\n");
        write("system.slice/vidworker.service/memory.max", "1610612736\n");
        write("system.slice/vidworker.service/memory.high", "1288490188\n");
        let own = "0::/system.slice/vidworker.service\n";
        assert_eq!(cgroup_memory_limit(root.path(), own), Some(1288490188));
        // A lower limit on the slice binds the unit too.
        write("system.slice/memory.max", &format!("{}\n", 512 * MIB));
        assert_eq!(cgroup_memory_limit(root.path(), own), Some(512 * MIB));
        // No limit anywhere: none.
        assert_eq!(cgroup_memory_limit(root.path(), "0::/user.slice\n"), None);

        // cgroup v1 (a hybrid host): the memory controller's own hierarchy.
        let v1 = tempfile::tempdir().expect("dir");
        let path = v1.path().join("memory/docker/abc");
        std::fs::create_dir_all(&path).expect("mkdir");
        std::fs::write(path.join("memory.limit_in_bytes"), format!("{}\n", 768 * MIB)).expect("write");
        std::fs::write(v1.path().join("memory/memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        let own = "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(cgroup_memory_limit(v1.path(), own), Some(768 * MIB));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let s = WorkerSettings {
            receive_wait: Duration::ZERO,
            ..WorkerSettings::default()
        };
        let err = s.validated().expect_err("0 s long poll");
        assert!(err.to_string().contains("RECEIVE_WAIT_SECONDS 0"), "{err}");
        let s = WorkerSettings {
            processed_prefix: String::new(),
            ..WorkerSettings::default()
        };
        assert!(s.validated().is_err());
    }
}

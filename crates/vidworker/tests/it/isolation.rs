//! Each transcode in a sandboxed child of `vidworker run`: a crash, a
//! memory blow-up or a hang hurts its own job only, and killing the child
//! stops a job at once. Real processes and signals, on the real stack.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::Pid;
use uuid::Uuid;
use worker::db::{FailureKind, Status};

use crate::binary::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(180);

impl BinaryWorker {
    /// The pids of the transcode children started for `video`, in order,
    /// from the worker's log.
    fn children_of(&self, video: Uuid) -> Vec<i32> {
        let video = video.to_string();
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "transcoding in a child process" && v["span"]["video_id"] == video.as_str())
            .filter_map(|v| v["pid"].as_i64())
            .map(|p| p as i32)
            .collect()
    }

    /// Waits for a transcode child of `video` not in `seen`.
    fn next_child_of(&self, video: Uuid, seen: &HashSet<i32>) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(pid) = self.children_of(video).into_iter().find(|p| !seen.contains(p)) {
                return pid;
            }
            assert!(
                start.elapsed() < LIMIT,
                "no new transcode child of {video}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `pid` is still a process (a zombie is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: i32, sig: Signal) {
    let pid = Pid::from_raw(pid).expect("a positive pid");
    rustix::process::kill_process(pid, sig).unwrap_or_else(|e| panic!("kill({sig:?}): {e}"));
}

/// Waits for `pid` to be gone; says how long that took.
fn gone_within(pid: i32, limit: Duration) -> Duration {
    let start = Instant::now();
    while alive(pid) {
        assert!(start.elapsed() < limit, "child {pid} still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn job_dirs(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("job-") {
            found.push(entry.display().to_string());
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_transcode_fails_its_own_video_and_spares_the_one_beside_it() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let victim = stack.submit(SLOW).await;
    let bystander = stack.submit(SLOW).await;
    let worker = stack.spawn_binary(
        "crash",
        &[
            ("WORKER_CONCURRENCY", "2"),
            ("MAX_ATTEMPTS", "2"),
            ("RETRY_BACKOFF", "1"),
        ],
    );
    // Both transcode at once; the victim's child is killed as a decoder
    // bug would kill it, on each of its attempts.
    let mut seen = HashSet::new();
    tokio::task::block_in_place(|| {
        worker.next_child_of(bystander, &seen);
        for _ in 0..2 {
            let pid = worker.next_child_of(victim, &seen);
            seen.insert(pid);
            signal(pid, Signal::SEGV);
            gone_within(pid, Duration::from_secs(5));
        }
    });
    let rows = stack.wait_settled(&[victim, bystander], LIMIT).await;
    let (victim_row, bystander_row) = (&rows[0], &rows[1]);
    assert_eq!(bystander_row.status, Status::Processed, "{bystander_row:?}");
    assert_eq!(
        bystander_row.attempts, 1,
        "the crash beside it cost it nothing: {bystander_row:?}"
    );
    assert_eq!(victim_row.status, Status::Failed, "{victim_row:?}");
    assert_eq!(victim_row.failure_kind, Some(FailureKind::Crashed), "{victim_row:?}");
    assert_eq!(victim_row.attempts, 2, "{victim_row:?}");
    let error = victim_row.error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "s3://{BUCKET}/originals/{victim}.mp4: the transcode crashed (killed by SIGSEGV)"
        )),
        "{error}"
    );
    // The worker itself never went down.
    assert!(alive(worker.pid()), "{}", worker.log_text());
    assert_eq!(worker.log_text().matches("\"worker ready\"").count(), 1);
    worker.signal(Signal::TERM);
    stack.check_invariants(&[victim, bystander]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_memory_fails_as_over_memory_while_a_small_one_beside_it_finishes() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let huge = stack.submit("uhd-4k60.mp4").await;
    let small = stack.submit("gray-720p.mp4").await;
    // Measured here (`RUST_LOG=worker::isolate=debug` logs each child's
    // peak): the 720p job adds 138 MB of address space to the program,
    // the 4K60 one 200 MB, with one thread each.
    let mut worker = stack.spawn_binary(
        "memory",
        &[
            ("WORKER_CONCURRENCY", "2"),
            ("RENDITION_THREADS", "1"),
            ("MEMORY_PER_JOB", "150M"),
        ],
    );
    let rows = stack.wait_settled(&[huge, small], LIMIT).await;
    let (huge_row, small_row) = (&rows[0], &rows[1]);
    assert_eq!(small_row.status, Status::Processed, "{small_row:?}");
    assert_eq!(huge_row.status, Status::Failed, "{huge_row:?}");
    assert_eq!(
        huge_row.failure_kind,
        Some(FailureKind::OverMemory),
        "{huge_row:?}\n{}",
        worker.log_text()
    );
    assert_eq!(huge_row.attempts, 1, "a limit of the input is final: {huge_row:?}");
    let error = huge_row.error.clone().unwrap_or_default();
    assert!(error.contains("needs more than the 150 MiB a job may use"), "{error}");
    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    stack.check_invariants(&[huge, small]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_stuck_inside_ffmpeg_is_killed_at_the_time_limit() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit(SLOW).await;
    let worker = stack.spawn_binary("hung", &[("JOB_TIMEOUT", "4"), ("MAX_ATTEMPTS", "1")]);
    // SIGSTOP: the child answers nothing, its own deadline never fires,
    // as when a decoder call never returns.
    let pid = tokio::task::block_in_place(|| {
        let pid = worker.next_child_of(id, &HashSet::new());
        signal(pid, Signal::STOP);
        pid
    });
    let stopped = Instant::now();
    tokio::task::block_in_place(|| gone_within(pid, Duration::from_secs(4 + 2)));
    let rows = stack.wait_settled(&[id], LIMIT).await;
    assert!(stopped.elapsed() < Duration::from_secs(4 + 2));
    assert_eq!(rows[0].status, Status::Failed, "{:?}", rows[0]);
    let error = rows[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("timed out after 4.0 s (killed: stuck inside FFmpeg)"),
        "{error}"
    );
    assert!(
        job_dirs(stack.work_dir.path()).is_empty(),
        "{:?}",
        job_dirs(stack.work_dir.path())
    );
    worker.signal(Signal::TERM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_kills_the_child_within_a_second() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit(SLOW).await;
    let mut worker = stack.spawn_binary("grace", &[("SHUTDOWN_GRACE", "1")]);
    let pid = tokio::task::block_in_place(|| worker.next_child_of(id, &HashSet::new()));
    worker.signal(Signal::TERM);
    let signalled = Instant::now();
    let took = tokio::task::block_in_place(|| gone_within(pid, Duration::from_secs(10)));
    assert!(
        took < Duration::from_secs(1 + 1),
        "the child outlived the 1 s grace period by {:?}",
        took.saturating_sub(Duration::from_secs(1))
    );
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    assert!(signalled.elapsed() < Duration::from_secs(10));
    assert!(
        job_dirs(stack.work_dir.path()).is_empty(),
        "{:?}",
        job_dirs(stack.work_dir.path())
    );
    let row = stack.row(id).await;
    assert_eq!(
        (row.status, row.attempts, row.interruptions),
        (Status::Pending, 1, 1),
        "handed back, its attempt not counted: {row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_fail_through_the_child_as_they_do_in_process() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let corrupt = stack.submit("truncated.mp4").await;
    let audio = stack.submit("audio-only.m4a").await;
    // A playlist that would make FFmpeg read a file of the machine.
    let playlist = stack
        .submit_bytes(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
        .await;
    let worker = stack.spawn_binary("hostile", &[("WORKER_CONCURRENCY", "2")]);
    let rows = stack.wait_settled(&[corrupt, audio, playlist], LIMIT).await;
    for row in &rows {
        assert_eq!(row.status, Status::Failed, "{row:?}");
        assert_eq!(row.failure_kind, Some(FailureKind::Input), "{row:?}");
        assert_eq!(row.attempts, 1, "{row:?}");
    }
    let error = |i: usize| rows[i].error.clone().unwrap_or_default();
    assert!(
        error(0).starts_with(&format!("s3://{BUCKET}/originals/{corrupt}.mp4: corrupt or truncated")),
        "{}",
        error(0)
    );
    assert!(error(1).contains("no video stream"), "{}", error(1));
    assert!(error(2).contains(": refused: "), "{}", error(2));
    worker.signal(Signal::TERM);
    stack.check_invariants(&[corrupt, audio, playlist]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_says_which_sandbox_layers_are_in_force() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let port = testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    // This kernel has every layer, so `required` starts.
    let mut worker = stack.spawn_binary("layers", &[("METRICS_ADDR", addr.as_str()), ("SANDBOX", "required")]);
    stack
        .wait_for(Duration::from_secs(60), "the metrics endpoint", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        })
        .await;
    let (_, text) = http_get(port, "/metrics");
    for layer in ["limits", "capabilities", "landlock", "seccomp"] {
        let line = format!("vidworker_sandbox_layer{{layer=\"{layer}\"}} 1");
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
    let ready = worker
        .log_text()
        .lines()
        .find(|l| l.contains("\"worker ready\""))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        ready.contains("\"isolation\":\"child, sandbox: limits,capabilities,landlock,seccomp\""),
        "{ready}"
    );
    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
}

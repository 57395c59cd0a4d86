//! The transcode children's sandbox, applied for real in a fresh process
//! (this test binary started again, running only [`sandbox_probe`]: a
//! sandbox cannot be lifted, so it must not confine the test runner), and
//! what a compromised decoder would try next, each refused.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};
use worker::isolate::sandbox::{self, Coverage, Policy};

/// Set in the probe's environment: the [`Probe`] to run, as JSON.
const PROBE: &str = "VIDWORKER_SANDBOX_PROBE";

/// What the probe is told.
#[derive(Serialize, Deserialize)]
struct Probe {
    /// Its job directory, the only place it may write.
    job_dir: PathBuf,
    /// A file outside it, like the worker's environment file.
    secret: PathBuf,
    /// Where an escaped write would land.
    outside: PathBuf,
    /// A port something listens on.
    port: u16,
    /// The worker's pid, whose environment it must not read.
    parent: u32,
}

/// What each attempt came to: `Ok` or the OS error number.
type Outcome = Result<(), i32>;

#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    layers: sandbox::Layers,
    tcp_connect: Outcome,
    read_passwd: Outcome,
    read_secret: Outcome,
    read_parent_environment: Outcome,
    write_outside: Outcome,
    exec: Outcome,
    spawn: Outcome,
    write_inside: Outcome,
    read_inside: Outcome,
    thread: Outcome,
}

fn outcome<T>(r: io::Result<T>) -> Outcome {
    r.map(drop).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[test]
#[ignore = "the confined half of the_sandbox_refuses_…: started by it in a process of its own"]
fn sandbox_probe() {
    let Ok(probe) = std::env::var(PROBE) else {
        return;
    };
    let probe: Probe = serde_json::from_str(&probe).expect("a probe");
    let layers = sandbox::apply(&Policy {
        read: Vec::new(),
        write: vec![probe.job_dir.clone()],
        memory: Some(512 << 20),
        file_size: 1 << 20,
        open_files: 64,
    })
    .expect("the sandbox applies");
    let inside = probe.job_dir.join("rendition.mp4");
    let seen = Seen {
        layers,
        tcp_connect: outcome(std::net::TcpStream::connect(("127.0.0.1", probe.port))),
        read_passwd: outcome(std::fs::read("/etc/passwd")),
        read_secret: outcome(std::fs::read(&probe.secret)),
        read_parent_environment: outcome(std::fs::read(format!("/proc/{}/environ", probe.parent))),
        write_outside: outcome(std::fs::write(&probe.outside, b"x")),
        // `exec` replaces this process only if execve succeeds.
        exec: Err(Command::new("/bin/true").exec().raw_os_error().unwrap_or(-1)),
        spawn: outcome(Command::new("/bin/true").status()),
        write_inside: outcome(std::fs::write(&inside, b"frames")),
        read_inside: outcome(std::fs::read(&inside)),
        thread: outcome(
            std::thread::Builder::new()
                .spawn(|| ())
                .and_then(|t| t.join().map_err(|_| io::Error::other("the thread panicked"))),
        ),
    };
    println!("SEEN {}", serde_json::to_string(&seen).expect("json"));
}

#[test]
fn the_sandbox_refuses_the_network_other_files_and_new_programs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let job_dir = dir.path().join("job-1");
    std::fs::create_dir(&job_dir).expect("job dir");
    let secret = dir.path().join("vidworker.env");
    std::fs::write(&secret, "DATABASE_URL=postgres://vidworker:secret@db/vidworker\n").expect("secret");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let outside = dir.path().join("escaped");
    let probe = Probe {
        job_dir: job_dir.clone(),
        secret,
        outside: outside.clone(),
        port: listener.local_addr().expect("addr").port(),
        parent: std::process::id(),
    };
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--ignored",
            "--exact",
            "sandbox::sandbox_probe",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE, serde_json::to_string(&probe).expect("json"))
        .output()
        .expect("the probe runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Seen = stdout
        .lines()
        .find_map(|l| l.split_once("SEEN ").map(|(_, json)| json))
        .map(|json| serde_json::from_str(json).expect("the probe's report"))
        .unwrap_or_else(|| {
            panic!(
                "no report from the probe:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });

    assert!(seen.layers.complete(), "{seen:?}");
    assert_eq!(seen.layers.landlock, Coverage::Full);
    let (eperm, eacces) = (Err(libc::EPERM), Err(libc::EACCES));
    assert_eq!(seen.tcp_connect, eperm, "seccomp refuses sockets");
    assert_eq!(seen.read_passwd, eacces, "Landlock refuses /etc/passwd");
    assert_eq!(seen.read_secret, eacces, "Landlock refuses the environment file");
    assert_eq!(
        seen.read_parent_environment, eacces,
        "Landlock refuses /proc/<worker>/environ"
    );
    assert_eq!(seen.write_outside, eacces, "Landlock refuses writes outside the job");
    assert_eq!(seen.exec, eperm, "seccomp refuses execve");
    assert!(seen.spawn.is_err(), "no new process: {:?}", seen.spawn);
    // What a transcode does still works.
    assert_eq!(seen.write_inside, Ok(()));
    assert_eq!(seen.read_inside, Ok(()));
    assert_eq!(seen.thread, Ok(()));
    assert!(!outside.exists());
    assert!(job_dir.join("rendition.mp4").exists());
}

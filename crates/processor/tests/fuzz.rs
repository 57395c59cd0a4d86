//! A mutation fuzzer that runs in CI on a fixed time budget: fixtures and
//! hostile shapes are mutated (bit flips, interesting values, truncation,
//! chunk copies, splices, box-size corruption) and fed to probe and process,
//! each in a child process so a crash or hang is caught and the input kept.
//! Every input must be handled without panic, within the time limit, and
//! without opening any file but itself.
//!
//! `FUZZ_SECONDS` sets the budget (default 30), `FUZZ_SEED` the seed
//! (default: from the clock, printed). Inputs that crash or hang are saved in
//! `target/fuzz-findings/`.
//!
//! Coverage-guided fuzzing (cargo-fuzz) would not help here: the code under
//! test is the system's uninstrumented FFmpeg, reached through our opener.

#![allow(clippy::expect_used, reason = "test code: a failure is a test failure")]

#[path = "it/common.rs"]
mod common;
#[path = "it/hostile.rs"]
mod hostile;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use processor::{CancelFlag, Limits, RenditionSpec};

/// Wall time one input may take, child start-up included.
const HANG: Duration = Duration::from_secs(30);

/// The child side: processes the one file named by `FUZZ_INPUT`. Run by the
/// fuzzer as `<test binary> --exact fuzz_child --ignored`.
#[test]
#[ignore = "run by mutated_media_is_handled_safely, one input at a time"]
fn fuzz_child() {
    let input = PathBuf::from(std::env::var_os("FUZZ_INPUT").expect("FUZZ_INPUT"));
    let out = PathBuf::from(std::env::var_os("FUZZ_OUTPUT").expect("FUZZ_OUTPUT"));
    let spec = RenditionSpec {
        max_duration: Duration::from_secs(2),
        preset: "ultrafast".into(),
        threads: 1,
        limits: Limits {
            timeout: Some(Duration::from_secs(10)),
            ..Limits::default()
        },
        ..RenditionSpec::default()
    };
    let _ = processor::probe_with(&input, &spec.limits, &CancelFlag::new());
    match processor::process(&input, &out, &spec, |_| {}, &CancelFlag::new()) {
        Ok(_) => println!("FUZZ-RESULT ok"),
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "multi-line error: {e:?}");
            println!("FUZZ-RESULT {}", e.kind());
            println!("FUZZ-DETAIL {e}");
        }
    }
}

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn seeds(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = [
        "gray-720p.mp4",
        "rotated-180.mov",
        "short-0.4s.mp4",
        "tiny-64x64.mp4",
        "letterbox-21x9.webm",
        "anamorphic-pal.mkv",
        "pillarbox-4x3.avi",
        "prores.mov",
        "truncated.mp4",
        "moov-at-end.mp4",
        "audio-only.m4a",
    ]
    .iter()
    .map(|n| (n.to_string(), fs::read(common::fixture(n)).expect("fixture")))
    .collect();
    let picture = hostile::jpeg(32, 32);
    let secret = dir.join("secret.mp4").display().to_string();
    seeds.push(("built.avi".into(), hostile::avi(&picture, 4, 32, 32, None)));
    let playlist = format!("#EXTM3U\n#EXTINF:1,\nfile://{secret}\n").into_bytes();
    seeds.push((
        "gab2.avi".into(),
        hostile::avi(&picture, 4, 32, 32, Some(&hostile::gab2(&playlist))),
    ));
    seeds.push(("playlist.mp4".into(), playlist));
    seeds.push((
        "script.mp4".into(),
        format!("ffconcat version 1.0\nfile '{secret}'\n").into_bytes(),
    ));
    seeds
}

/// One mutation of a seed (or of two).
fn mutate(rng: &mut Rng, seeds: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let (name, base) = &seeds[rng.below(seeds.len())];
    let mut data = base.clone();
    let rounds = 1 + rng.below(4);
    let mut how = Vec::new();
    for _ in 0..rounds {
        if data.is_empty() {
            data.push(0);
        }
        let len = data.len();
        match rng.below(7) {
            0 => {
                for _ in 0..1 + rng.below(16) {
                    let i = rng.below(len);
                    data[i] ^= 1 << rng.below(8);
                }
                how.push("bits");
            }
            1 => {
                const VALUES: [u32; 8] = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF];
                let v = VALUES[rng.below(VALUES.len())].to_be_bytes();
                let i = rng.below(len.saturating_sub(4).max(1));
                for (k, b) in v.iter().enumerate() {
                    if i + k < len {
                        data[i + k] = *b;
                    }
                }
                how.push("value");
            }
            2 => {
                data.truncate(rng.below(len).max(1));
                how.push("truncate");
            }
            3 => {
                let a = rng.below(len);
                let b = (a + rng.below(4096)).min(len);
                let piece = data[a..b].to_vec();
                let at = rng.below(len);
                data.splice(at..at, piece);
                how.push("copy");
            }
            4 => {
                let a = rng.below(len);
                let b = (a + rng.below(4096)).min(len);
                data.drain(a..b);
                how.push("cut");
            }
            5 => {
                let (_, other) = &seeds[rng.below(seeds.len())];
                let at = rng.below(len);
                let from = rng.below(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
                how.push("splice");
            }
            _ => {
                // Corrupt the size of a random MP4/Matroska-ish box: find a
                // four-letter tag and damage the 32-bit size before it.
                let tags: &[&[u8]] = &[b"moov", b"trak", b"stsz", b"stco", b"mdat", b"avcC", b"hdlr", b"stsd"];
                let tag = tags[rng.below(tags.len())];
                if let Some(p) = data.windows(4).position(|w| w == tag).filter(|p| *p >= 4) {
                    let v = (rng.next() as u32).to_be_bytes();
                    data[p - 4..p].copy_from_slice(&v);
                }
                how.push("box");
            }
        }
    }
    (format!("{name} [{}]", how.join("+")), data)
}

/// The time budget and the seed, from `FUZZ_SECONDS` and `FUZZ_SEED`.
fn budget_and_seed() -> (Duration, u64) {
    let budget = Duration::from_secs(
        std::env::var("FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    (budget, seed)
}

/// Runs `fuzz_child` on `input` in a child process of this test binary:
/// its exit status (`None` if it hung and was killed) and what it printed.
fn run_child(exe: &Path, input: &Path, out: &Path) -> (Option<std::process::ExitStatus>, String) {
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "fuzz_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("FUZZ_INPUT", input)
        .env("FUZZ_OUTPUT", out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if t.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = child
        .stdout
        .take()
        .map(|mut s| {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
            text
        })
        .unwrap_or_default();
    (status, stdout)
}

/// The child's own word on what happened (`FUZZ-RESULT <kind>`), or `none`.
fn result_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            l.split_once("FUZZ-RESULT ")
                .map(|(_, r)| r.split_whitespace().next().unwrap_or(""))
        })
        .unwrap_or("none")
        .to_owned()
}

#[test]
fn mutated_media_is_handled_safely() {
    let (budget, seed) = budget_and_seed();
    eprintln!(
        "fuzz: seed {seed}, budget {} s (FUZZ_SEED / FUZZ_SECONDS)",
        budget.as_secs()
    );
    let dir = tempfile::tempdir().expect("dir");
    let out_dir = tempfile::tempdir().expect("out dir");
    fs::copy(common::fixture("gray-720p.mp4"), dir.path().join("secret.mp4")).expect("secret");
    fs::write(dir.path().join("canary.txt"), "VIDWORKER-CANARY\n").expect("canary");
    let seeds = seeds(dir.path());
    let watch = hostile::OpenWatch::new(dir.path());
    let findings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-findings");
    let exe = std::env::current_exe().expect("test binary");

    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut runs = 0u32;
    let mut kinds = std::collections::BTreeMap::<String, u32>::new();
    let mut failures = Vec::new();
    while started.elapsed() < budget {
        let (what, data) = mutate(&mut rng, &seeds);
        let input = dir.path().join("input.bin");
        fs::write(&input, &data).expect("write input");
        let _ = watch.opened();
        let out = out_dir.path().join("out.mp4");
        let (status, stdout) = run_child(&exe, &input, &out);
        runs += 1;
        let result = result_of(&stdout);
        let opened = watch.opened();
        let problem = match status {
            None => Some(format!("hung for more than {} s", HANG.as_secs())),
            Some(s) if !s.success() => Some(format!("child failed ({s}): {}", stdout.trim())),
            Some(_) if opened.iter().any(|n| n != "input.bin") => Some(format!("opened {opened:?}")),
            // The child must say what happened, or it did not run at all.
            Some(_) if result == "none" => Some(format!("no result from the child: {}", stdout.trim())),
            Some(_) => None,
        };
        if result == "internal" {
            // Internal errors are retried by the worker; bad input should
            // not land here, so show what did.
            let detail = stdout
                .lines()
                .find_map(|l| l.split_once("FUZZ-DETAIL ").map(|(_, d)| d.to_owned()));
            eprintln!("fuzz: internal error on {what}: {}", detail.unwrap_or_default());
        }
        *kinds.entry(result).or_default() += 1;
        let _ = fs::remove_file(&out);
        let _ = fs::remove_file(out.with_extension("jpg"));
        if let Some(problem) = problem {
            fs::create_dir_all(&findings).expect("findings dir");
            let saved = findings.join(format!("seed{seed}-run{runs}.bin"));
            fs::write(&saved, &data).expect("save finding");
            failures.push(format!("{what}: {problem} (input saved as {})", saved.display()));
        }
    }
    eprintln!(
        "fuzz: {runs} inputs in {:.0} s, outcomes {kinds:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(runs > 0);
    assert!(
        failures.is_empty(),
        "{} findings:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        fs::read_dir(out_dir.path()).expect("out").count(),
        0,
        "no partial outputs left"
    );
}

//! The release artifact: `scripts/release.sh` packages the binary under
//! test into a .deb, which is then looked at with Debian's own tools, as
//! the operator installing it would: its fields and contents (`dpkg-deb`),
//! its checksum (`sha256sum --check`), the unit (`systemd-analyze
//! verify`), the maintainer scripts (`shellcheck`), and the packaged binary
//! processing a video and checking the packaged settings file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test (the debug build: a release build takes minutes).
const VIDWORKER: &str = env!("CARGO_BIN_EXE_vidworker");

/// The checkout.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cmd` to success; its output.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A throwaway bundle of two self-signed CA certificates, as Amazon's
/// global-bundle.pem is a file of several.
fn ca_bundle(dir: &Path) -> PathBuf {
    let mut pem = Vec::new();
    for n in 1..=2 {
        let (cert, key) = (dir.join(format!("ca{n}.pem")), dir.join(format!("ca{n}.key")));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-days", "2", "-subj", &format!("/CN=vidworker test CA {n}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        pem.extend(std::fs::read(&cert).expect("certificate"));
    }
    let bundle = dir.join("global-bundle.pem");
    std::fs::write(&bundle, pem).expect("bundle");
    bundle
}

/// `scripts/release.sh --allow-dirty` run from `cwd` (not the checkout),
/// packaging the binary under test, into `cwd/dist`.
fn release(cwd: &Path, ca: &Path) -> Output {
    Command::new(workspace().join("scripts/release.sh"))
        .arg("--allow-dirty")
        .current_dir(cwd)
        .env("VIDWORKER_BIN", VIDWORKER)
        .env("RDS_CA_BUNDLE", ca)
        .env("DIST_DIR", "dist")
        .output()
        .expect("release.sh runs")
}

/// The Debian version of this crate's version (`-` becomes `~`, as
/// release.sh does).
fn debian_version() -> String {
    env!("CARGO_PKG_VERSION").replace('-', "~")
}

/// `dpkg --print-architecture`: what the package is built for.
fn host_arch() -> String {
    text(&run(Command::new("dpkg").arg("--print-architecture")).stdout)
        .trim()
        .to_owned()
}

fn field(deb: &Path, name: &str) -> String {
    text(&run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name)).stdout)
        .trim()
        .to_owned()
}

/// Package, Version, Architecture and the runtime libraries in Depends.
fn assert_fields(deb: &Path) {
    assert_eq!(field(deb, "Package"), "vidworker");
    assert_eq!(field(deb, "Version"), debian_version());
    assert_eq!(field(deb, "Architecture"), host_arch());
    assert_eq!(
        field(deb, "Maintainer"),
        "vidworker developers <vidworker@example.invalid>"
    );
    assert_eq!(
        (field(deb, "Section"), field(deb, "Priority")),
        ("video".into(), "optional".into())
    );
    let depends = field(deb, "Depends");
    let packages: Vec<&str> = depends.split(',').filter_map(|d| d.split_whitespace().next()).collect();
    for needed in ["libavcodec59", "libavfilter8", "libavformat59", "libc6", "adduser"] {
        assert!(packages.contains(&needed), "{needed} in Depends: {depends}");
    }
}

/// `dpkg-deb --contents`: path → (mode, owner).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    text(&run(Command::new("dpkg-deb").arg("--contents").arg(deb)).stdout)
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let path = cols.get(5)?.strip_prefix('.')?;
            Some((path.to_owned(), (cols[0].to_owned(), cols[1].to_owned())))
        })
        .collect()
}

/// Every file a user looks for, root's, the settings readable by root
/// only, and a man page for each page the binary writes.
fn assert_contents(deb: &Path, scratch: &Path) {
    let files = contents(deb);
    let listing = format!("{files:#?}");
    for (path, mode) in [
        ("/usr/bin/vidworker", "-rwxr-xr-x"),
        ("/lib/systemd/system/vidworker.service", "-rw-r--r--"),
        ("/lib/systemd/system/vidworker-unhealthy.service", "-rw-r--r--"),
        ("/etc/vidworker/env", "-rw-------"),
        ("/usr/share/vidworker/rds-ca.pem", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/vidworker", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_vidworker", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/vidworker.fish", "-rw-r--r--"),
        ("/usr/share/doc/vidworker/copyright", "-rw-r--r--"),
        ("/usr/share/man/man1/vidworker.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/vidworker-run.1.gz", "-rw-r--r--"),
    ] {
        assert_eq!(
            files.get(path).map(|(m, _)| m.as_str()),
            Some(mode),
            "{path} in {listing}"
        );
    }
    assert!(files.values().all(|(_, owner)| owner == "root/root"), "{listing}");
    let pages = scratch.join("man");
    std::fs::create_dir(&pages).expect("dir");
    run(Command::new(VIDWORKER).args(["man", "--dir"]).arg(&pages));
    for page in std::fs::read_dir(&pages).expect("pages") {
        let name = page.expect("page").file_name().to_string_lossy().into_owned();
        let path = format!("/usr/share/man/man1/{name}.gz");
        assert!(files.contains_key(&path), "{path} in {listing}");
    }
}

/// The .sha256 beside the package checks it, and release.sh printed the
/// same sum.
fn assert_checksum(deb: &Path, printed: &str) {
    let dist = deb.parent().expect("dist");
    run(Command::new("sha256sum")
        .arg("--check")
        .arg(deb.with_extension("deb.sha256"))
        .current_dir(dist));
    let sum = text(&run(Command::new("sha256sum").arg(deb)).stdout);
    let sum = sum.split_whitespace().next().expect("sum");
    assert!(printed.lines().any(|l| l == format!("sha256: {sum}")), "{printed}");
}

/// `dpkg-deb -x` and `-e`: the files and the control area under `root`.
fn extract(deb: &Path, root: &Path) {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root));
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(root.join("DEBIAN")));
}

/// The units verify against the extracted tree, their ExecStart the
/// packaged binary; a failed worker starts the unit that marks the
/// instance unhealthy.
fn assert_unit_verifies(root: &Path) {
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/vidworker.service")).expect("unit");
    assert!(unit.lines().any(|l| l == "ExecStart=/usr/bin/vidworker run"), "{unit}");
    assert!(unit.contains("EnvironmentFile=/etc/vidworker/env"), "{unit}");
    assert!(
        unit.lines().any(|l| l == "OnFailure=vidworker-unhealthy.service"),
        "{unit}"
    );
    // --root needs the units the unit's default dependencies name
    // (sysinit.target, ...): this machine's, copied beside ours.
    std::fs::create_dir_all(root.join("usr/lib/systemd")).expect("dir");
    run(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd/")));
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(["vidworker.service", "vidworker-unhealthy.service"]));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(said.trim(), "", "systemd-analyze verify has no complaint");
}

/// POSIX sh with `set -e`, shellcheck-clean; the settings file a conffile.
fn assert_maintainer_scripts(root: &Path) {
    let control = root.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        let body = std::fs::read_to_string(control.join(script)).expect("script");
        assert!(
            body.starts_with("#!/bin/sh\n") && body.contains("\nset -e\n"),
            "{script}: {body}"
        );
        run(Command::new("shellcheck").arg(control.join(script)));
    }
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles, "/etc/vidworker/env\n");
}

/// The packaged binary runs: its version, a fixture made into a 1280x720
/// rendition, as its own probe reads it.
fn assert_binary_works(root: &Path, scratch: &Path) {
    let bin = root.join("usr/bin/vidworker");
    let version = text(&run(Command::new(&bin).arg("--version")).stdout);
    let expected = format!("vidworker {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    assert!(version.contains("FFmpeg libraries loaded: "), "{version}");
    let output = scratch.join("short.mp4");
    run(Command::new(&bin)
        .arg("process")
        .arg(workspace().join("fixtures/short-0.4s.mp4"))
        .arg("--output")
        .arg(&output));
    assert!(output.is_file(), "{} written", output.display());
    let probe = run(Command::new(&bin).arg("probe").arg("--json").arg(&output));
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("probe JSON");
    assert_eq!(
        (probe["display_width"].as_u64(), probe["display_height"].as_u64()),
        (Some(1280), Some(720)),
        "{probe}"
    );
}

/// `vidworker check --env-file` with an environment of `env` only.
fn check_with(root: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(root.join("usr/bin/vidworker"))
        .arg("check")
        .arg("--env-file")
        .arg(root.join("etc/vidworker/env"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("vidworker check runs");
    (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

/// The shipped settings file as installed: `check` names the three
/// settings still to fill in, one per line; once they are given, every
/// line the file sets is accepted (the work directory is the file's).
fn assert_env_file(root: &Path) {
    let (code, said) = check_with(root, &[]);
    assert_eq!(code, Some(1), "{said}");
    let fails: Vec<&str> = said.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 3, "{said}");
    for setting in ["DATABASE_URL", "SQS_QUEUE_URL", "S3_BUCKET"] {
        let line = format!("FAIL settings: {setting} is not set");
        assert!(fails.iter().any(|l| l.starts_with(&line)), "{line} in {said}");
    }
    // Addresses where nothing listens: the checks after the settings fail
    // at once.
    let (code, said) = check_with(
        root,
        &[
            ("DATABASE_URL", "postgres://vidworker@127.0.0.1:1/videos"),
            ("DATABASE_CALL_TIMEOUT", "2"),
            ("SQS_QUEUE_URL", "http://127.0.0.1:1/111122223333/jobs"),
            ("S3_BUCKET", "videos"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    assert_eq!(code, Some(1), "{said}");
    assert!(said.lines().any(|l| l.starts_with("ok   settings: ")), "{said}");
    assert!(said.contains(" work directory: /var/lib/vidworker"), "{said}");
}

#[test]
fn release_builds_a_deb_that_installs_a_working_service() {
    let scratch = tempfile::tempdir().expect("dir");
    let ca = ca_bundle(scratch.path());
    let out = release(scratch.path(), &ca);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "release.sh: {printed}{}", text(&out.stderr));
    let deb = scratch
        .path()
        .join(format!("dist/vidworker_{}_{}.deb", debian_version(), host_arch()));
    assert!(printed.contains(&format!("deb:    {}", deb.display())), "{printed}");
    assert_fields(&deb);
    assert_contents(&deb, scratch.path());
    assert_checksum(&deb, &printed);
    let root = scratch.path().join("root");
    extract(&deb, &root);
    assert_eq!(
        std::fs::read(root.join("usr/share/vidworker/rds-ca.pem")).ok(),
        std::fs::read(&ca).ok()
    );
    let copyright = std::fs::read_to_string(root.join("usr/share/doc/vidworker/copyright")).expect("copyright");
    for needed in [
        "MIT OR Apache-2.0",
        "/usr/share/common-licenses/Apache-2.0",
        "Permission is hereby granted",
    ] {
        assert!(copyright.contains(needed), "{needed} in {copyright}");
    }
    assert_unit_verifies(&root);
    assert_maintainer_scripts(&root);
    assert_binary_works(&root, scratch.path());
    assert_env_file(&root);
}

/// What is not a bundle of certificates is refused before anything is
/// built, in one line naming the file.
#[test]
fn release_refuses_a_ca_bundle_that_is_not_pem_certificates() {
    let scratch = tempfile::tempdir().expect("dir");
    let certs = std::fs::read(ca_bundle(scratch.path())).expect("bundle");
    let key = std::fs::read(scratch.path().join("ca1.key")).expect("key");
    let cases: [(&str, Vec<u8>); 3] = [
        ("notes.txt", b"the RDS bundle goes here\n".to_vec()),
        ("empty.pem", Vec::new()),
        ("with-key.pem", [certs, key].concat()),
    ];
    for (name, content) in cases {
        let bundle = scratch.path().join(name);
        std::fs::write(&bundle, content).expect("write");
        let out = release(scratch.path(), &bundle);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{name} accepted: {}", text(&out.stdout));
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        assert!(err.contains(&bundle.display().to_string()), "{name} named: {err}");
    }
    assert!(!scratch.path().join("dist").exists(), "nothing packaged");
}

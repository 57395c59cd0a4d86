// The migrations are embedded with `sqlx::migrate!`; rebuild when they
// change. The commit the binary is built from goes into its version and
// its metrics: $VIDWORKER_COMMIT when set (a container build without the
// .git directory), else `git rev-parse`, else "unknown".
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    println!("cargo:rerun-if-env-changed=VIDWORKER_COMMIT");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    let commit = std::env::var("VIDWORKER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        });
    println!(
        "cargo:rustc-env=VIDWORKER_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

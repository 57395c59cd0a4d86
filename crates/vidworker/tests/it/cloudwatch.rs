//! What the CloudWatch agent receives of `/metrics`. `deploy/metrics.txt`
//! lists it, and `deploy/check.py` checks the dashboard, the alarms and the
//! agent's metric declarations against that list; this test keeps the list
//! true to what `vidworker run` exports.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::binary::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Each family of an OpenMetrics text as `name type`, named as CloudWatch
/// names it: a counter by its sample, `<family>_total` (the agent keeps
/// the name as exposed), everything else by its family.
fn as_cloudwatch_names_them(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (family, kind) = rest.split_once(' ').expect("# TYPE <family> <type>");
            if kind == "counter" {
                let sample = format!("{family}_total");
                assert!(
                    text.lines().any(|l| l.starts_with(&sample)),
                    "counter {family} has no {sample} sample:\n{text}"
                );
                format!("{sample} {kind}")
            } else {
                format!("{family} {kind}")
            }
        })
        .collect()
}

/// `deploy/metrics.txt` without its comments and blank lines.
fn committed() -> (std::path::PathBuf, BTreeSet<String>) {
    let path = testkit::repo_root().join("deploy/metrics.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (path, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_metrics_txt_lists_every_family_the_worker_exports() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let good = stack.submit("gray-720p.mp4").await;
    let port = testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let mut worker = stack.spawn_binary("cloudwatch", &[("METRICS_ADDR", addr.as_str())]);
    stack.wait_settled(&[good], LIMIT).await;

    let (status, text) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(r#"vidworker_jobs_total{outcome="processed",kind="none"} 1"#),
        "the job is not counted yet:\n{text}"
    );
    let exported = as_cloudwatch_names_them(&text);
    let (path, listed) = committed();
    let missing: Vec<_> = exported.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&exported).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "{} is out of date: update it (then run deploy/check.py, which checks the dashboard, the alarms and \
         the CloudWatch agent's declarations against it).\n  exported but not listed: {missing:?}\n  listed but \
         not exported: {gone:?}\nThe families the worker exports, as CloudWatch names them:\n{}",
        path.display(),
        exported.iter().cloned().collect::<Vec<_>>().join("\n")
    );

    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
}

//! Knowing before SIGTERM that the EC2 instance is going away, from its
//! instance metadata (IMDSv2, through the AWS SDK's client):
//! - `autoscaling/target-lifecycle-state` turns `Terminated` when the Auto
//!   Scaling group takes the instance out (scale-in, a rolling update) and
//!   its termination lifecycle hook holds it for us to drain;
//! - `spot/instance-action` appears two minutes before a Spot instance is
//!   reclaimed.
//!
//! On a notice the worker stops taking jobs, lets running ones finish if
//! they can before the deadline and hands the rest back, then completes the
//! lifecycle action (once) and exits. Off EC2 (no metadata service) it says
//! so once and carries on.
//!
//! While jobs run, the instance is also protected from scale-in
//! ([`Watcher::protect_while_busy`]), so the group picks idle instances
//! when the backlog empties; the drain above covers every termination that
//! protection does not stop (a notice that came first, Spot, a replacement).

use std::time::{Duration, Instant, SystemTime};

use aws_config::imds;
use tokio_util::sync::CancellationToken;

/// Paths of the instance metadata the watcher reads.
const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
const LIFECYCLE_STATE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";
const SPOT_ACTION: &str = "/latest/meta-data/spot/instance-action";

/// How the watcher works.
#[derive(Clone, Debug)]
pub struct TerminationSettings {
    /// Between two looks at the metadata.
    pub poll: Duration,
    /// How long the group's termination lifecycle hook holds the instance
    /// (its heartbeat timeout): the deadline after a lifecycle notice.
    pub lifecycle_timeout: Duration,
    /// The Auto Scaling group, to complete the lifecycle action.
    pub group: Option<String>,
    /// The termination lifecycle hook, to complete the lifecycle action.
    pub hook: Option<String>,
    /// How long an idle worker keeps its instance protected from scale-in
    /// after its last job: a short lull between two jobs does not flap it.
    pub protection_idle: Duration,
}

impl Default for TerminationSettings {
    fn default() -> Self {
        TerminationSettings {
            poll: Duration::from_secs(5),
            lifecycle_timeout: Duration::from_secs(600),
            group: None,
            hook: None,
            protection_idle: Duration::from_secs(30),
        }
    }
}

/// Why the instance is going away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The Auto Scaling group is terminating it.
    Lifecycle,
    /// Spot is reclaiming it.
    Spot,
}

/// A notice and the time it leaves.
#[derive(Clone, Copy, Debug)]
pub struct Termination {
    /// Why.
    pub notice: Notice,
    /// When the instance goes.
    pub deadline: Instant,
}

/// A failure to complete the lifecycle action.
#[derive(Debug, thiserror::Error)]
#[error("cannot complete the lifecycle action of {group}/{hook} for {instance}: {message}")]
pub struct CompleteError {
    group: String,
    hook: String,
    instance: String,
    message: String,
}

/// Watches this instance's metadata for termination notices.
#[derive(Debug)]
pub struct Watcher {
    imds: imds::Client,
    instance_id: String,
    settings: TerminationSettings,
}

impl Watcher {
    /// The watcher, if an instance metadata service answers (this is EC2);
    /// `None` elsewhere, said once in the log.
    pub async fn detect(settings: TerminationSettings) -> Option<Watcher> {
        let disabled = std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        if disabled {
            tracing::info!(
                "instance metadata disabled (AWS_EC2_METADATA_DISABLED): not watching for termination notices"
            );
            return None;
        }
        let imds = imds::Client::builder()
            .max_attempts(2)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .build();
        match tokio::time::timeout(Duration::from_secs(5), imds.get(INSTANCE_ID)).await {
            Ok(Ok(id)) => {
                let instance_id = id.as_ref().trim().to_owned();
                tracing::info!(
                    instance = instance_id,
                    group = settings.group.as_deref().unwrap_or("unknown"),
                    "on EC2: watching for Auto Scaling and Spot termination notices"
                );
                Some(Watcher {
                    imds,
                    instance_id,
                    settings,
                })
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "not on EC2 (no instance metadata): not watching for termination notices");
                None
            }
            Err(_) => {
                tracing::info!("not on EC2 (instance metadata did not answer): not watching for termination notices");
                None
            }
        }
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Waits for a termination notice; `None` if `stop` comes first.
    pub async fn next(&self, stop: &CancellationToken) -> Option<Termination> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll) => {}
                () = stop.cancelled() => return None,
            }
            if let Some(t) = self.look().await {
                return Some(t);
            }
        }
    }

    /// One look at the metadata.
    async fn look(&self) -> Option<Termination> {
        // 404 means no such state: not in a group, or no Spot action yet.
        if let Ok(state) = self.imds.get(LIFECYCLE_STATE).await
            && state.as_ref().trim() == "Terminated"
        {
            return Some(Termination {
                notice: Notice::Lifecycle,
                deadline: Instant::now() + self.settings.lifecycle_timeout,
            });
        }
        let action = self.imds.get(SPOT_ACTION).await.ok()?;
        let deadline = spot_deadline(action.as_ref(), SystemTime::now())?;
        Some(Termination {
            notice: Notice::Spot,
            deadline,
        })
    }

    /// Tells the Auto Scaling group the instance has drained, so it goes
    /// without waiting for the hook's timeout. Needs the group and the hook
    /// (`AUTOSCALING_GROUP_NAME`, `LIFECYCLE_HOOK_NAME`); without them the
    /// hook times out on its own, and it is said so.
    pub async fn complete_lifecycle_action(&self, client: &aws_sdk_autoscaling::Client) -> Result<(), CompleteError> {
        let (Some(group), Some(hook)) = (&self.settings.group, &self.settings.hook) else {
            tracing::warn!("no AUTOSCALING_GROUP_NAME and LIFECYCLE_HOOK_NAME: the lifecycle hook ends at its timeout");
            return Ok(());
        };
        client
            .complete_lifecycle_action()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .instance_id(&self.instance_id)
            .lifecycle_action_result("CONTINUE")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| CompleteError {
                group: group.clone(),
                hook: hook.clone(),
                instance: self.instance_id.clone(),
                message: crate::aws::describe(&e),
            })?;
        tracing::info!(
            event = "lifecycle_completed",
            group,
            hook,
            instance = self.instance_id,
            "told the Auto Scaling group the instance has drained"
        );
        Ok(())
    }

    /// Keeps the instance protected from scale-in while jobs run and for
    /// `protection_idle` after the last one, until `stop`; then lifts the
    /// protection, so a stopped worker never pins an idle instance. The
    /// first look lifts whatever a crashed predecessor left. Failures are
    /// logged and retried after a pause: protection is an optimisation,
    /// the drain on termination is the guarantee.
    pub async fn protect_while_busy(
        &self,
        client: &aws_sdk_autoscaling::Client,
        stats: &crate::telemetry::Stats,
        stop: &CancellationToken,
    ) {
        let Some(group) = self.settings.group.clone() else {
            tracing::info!("no AUTOSCALING_GROUP_NAME: the instance is not protected from scale-in while busy");
            return;
        };
        let mut protected: Option<bool> = None;
        let mut last_busy: Option<Instant> = None;
        let mut retry_at = Instant::now();
        loop {
            if stats.running() > 0 {
                last_busy = Some(Instant::now());
            }
            let want = last_busy.is_some_and(|t| t.elapsed() < self.settings.protection_idle);
            if protected != Some(want) && Instant::now() >= retry_at {
                match self.set_protection(client, &group, want).await {
                    Ok(()) => protected = Some(want),
                    Err(message) => {
                        tracing::warn!(
                            group,
                            protect = want,
                            error = message,
                            "cannot change scale-in protection"
                        );
                        retry_at = Instant::now() + PROTECTION_RETRY;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll) => {}
                () = stop.cancelled() => break,
            }
        }
        if protected != Some(false)
            && let Err(message) = self.set_protection(client, &group, false).await
        {
            tracing::warn!(group, error = message, "cannot lift scale-in protection at exit");
        }
    }

    async fn set_protection(
        &self,
        client: &aws_sdk_autoscaling::Client,
        group: &str,
        protect: bool,
    ) -> Result<(), String> {
        client
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .instance_ids(&self.instance_id)
            .protected_from_scale_in(protect)
            .send()
            .await
            .map_err(|e| crate::aws::describe(&e))?;
        tracing::info!(
            event = "scale_in_protection",
            group,
            instance = self.instance_id,
            protected = protect,
            "{}",
            if protect {
                "jobs running: protected from scale-in"
            } else {
                "idle: scale-in may take this instance"
            }
        );
        Ok(())
    }
}

/// The pause after a failed protection change before the next try.
const PROTECTION_RETRY: Duration = Duration::from_secs(30);

/// The deadline of a Spot interruption notice
/// (`{"action": "terminate", "time": "2026-11-30T12:00:00Z"}`), as an
/// instant; `None` if it is not one.
fn spot_deadline(body: &str, now: SystemTime) -> Option<Instant> {
    let notice: serde_json::Value = serde_json::from_str(body).ok()?;
    if !matches!(notice["action"].as_str(), Some("terminate" | "stop" | "hibernate")) {
        return None;
    }
    let at: SystemTime =
        time::OffsetDateTime::parse(notice["time"].as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?
            .into();
    Some(Instant::now() + at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spot_notice_gives_its_deadline() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = time::OffsetDateTime::from(now + Duration::from_secs(120))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format");
        let body = format!(r#"{{"action": "terminate", "time": "{at}"}}"#);
        let deadline = spot_deadline(&body, now).expect("a notice");
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            (Duration::from_secs(118)..=Duration::from_secs(120)).contains(&left),
            "{left:?}"
        );
        assert!(spot_deadline(r#"{"action": "none"}"#, now).is_none());
        assert!(spot_deadline("not json", now).is_none());
    }
}

//! Telling the deployment whether this instance works, so a bad release
//! stops at its first instance:
//! - CloudFormation's `SignalResource` once the worker is ready (or that it
//!   is not), which the group's `CreationPolicy` and rolling update's
//!   `WaitOnResourceSignals` wait for: a failure rolls the stack back;
//! - the Auto Scaling group's `SetInstanceHealth` when the service has
//!   failed for good (systemd's `OnFailure=`), so the group replaces the
//!   instance instead of keeping one that does nothing.

/// A rollout call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} for instance {instance}: {message}")]
pub struct RolloutError {
    action: String,
    instance: String,
    message: String,
}

/// Signals CloudFormation that this instance of `resource` in `stack`
/// works (`success`) or not. SignalResource carries no reason (only wait
/// condition handles do), so `reason` goes to the log, which the CloudWatch
/// agent ships.
pub async fn signal(
    client: &aws_sdk_cloudformation::Client,
    stack: &str,
    resource: &str,
    instance: &str,
    success: bool,
    reason: &str,
) -> Result<(), RolloutError> {
    use aws_sdk_cloudformation::types::ResourceSignalStatus;
    let status = if success {
        ResourceSignalStatus::Success
    } else {
        ResourceSignalStatus::Failure
    };
    tracing::info!(stack, resource, instance, success, reason, "signalling CloudFormation");
    client
        .signal_resource()
        .stack_name(stack)
        .logical_resource_id(resource)
        .unique_id(instance)
        .status(status)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| RolloutError {
            action: format!(
                "signal {} to {stack}/{resource}",
                if success { "SUCCESS" } else { "FAILURE" }
            ),
            instance: instance.to_owned(),
            message: crate::aws::describe(&e),
        })
}

/// Tells the Auto Scaling group this instance is unhealthy: the group
/// terminates it (through the drain hook) and launches a replacement.
pub async fn mark_unhealthy(client: &aws_sdk_autoscaling::Client, instance: &str) -> Result<(), RolloutError> {
    tracing::warn!(instance, "marking the instance unhealthy");
    client
        .set_instance_health()
        .instance_id(instance)
        .health_status("Unhealthy")
        .should_respect_grace_period(false)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| RolloutError {
            action: "mark unhealthy".to_owned(),
            instance: instance.to_owned(),
            message: crate::aws::describe(&e),
        })
}

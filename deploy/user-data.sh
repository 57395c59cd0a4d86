#!/bin/bash
# vidworker instance set-up: EC2 user data, run once as root by cloud-init on
# the Debian 12 AMI. Installs the FFmpeg runtime libraries, the CloudWatch
# and SSM agents and the vidworker package (binary, systemd units, RDS CA
# bundle), writes /etc/vidworker/env, starts vidworker.service and tells
# CloudFormation whether the worker got ready. No awscli, no PyPI, nothing
# from the internet but AWS's own S3 and the Debian mirror.
#
# deploy/cloudformation.yaml embeds this file verbatim through Fn::Sub: only
# the block of values below uses the dollar-brace form (CloudFormation fills
# it in); everywhere else write $var, never the braced form, or Fn::Sub
# would take it for a template variable.
# After editing, run `deploy/check.py --sync-user-data` to copy it into the
# template; `deploy/check.py` fails while the two differ.
#
# Output goes to /var/log/cloud-init-output.log (which the agent ships to
# the stack's log group) and the serial console. No secret is printed.
set -euo pipefail
umask 022

# --- filled in by CloudFormation (Fn::Sub) ---------------------------------
# shellcheck disable=SC2016 # literal here; CloudFormation substitutes them
readonly \
    REGION='${AWS::Region}' \
    STACK_NAME='${AWS::StackName}' \
    PACKAGE_URI='${PackageUri}' \
    PACKAGE_SHA256='${PackageSha256}' \
    DATABASE_SECRET_ARN='${DatabaseSecretArn}' \
    DATABASE_URL='${DatabaseUrl}' \
    S3_BUCKET='${Bucket}' \
    SQS_QUEUE_URL='${JobQueue}' \
    EVENTS_TOPIC_ARN='${EventsTopic}' \
    AUTOSCALING_GROUP_NAME='${AutoScalingGroupName}' \
    LIFECYCLE_HOOK_NAME='${LifecycleHookName}' \
    WORKER_CONCURRENCY='${WorkerConcurrency}' \
    SHUTDOWN_GRACE='${ShutdownGrace}' \
    VISIBILITY_TIMEOUT='${VisibilityTimeout}' \
    MAX_ATTEMPTS='${MaxAttempts}' \
    RUN_MIGRATIONS='${RunMigrations}' \
    CWAGENT_VERSION='${CloudWatchAgentVersion}' \
    CWAGENT_SHA256='${CloudWatchAgentSha256}' \
    SSM_AGENT_VERSION='${SsmAgentVersion}' \
    SSM_AGENT_SHA256='${SsmAgentSha256}' \
    LOG_GROUP='${WorkerLogGroup}'
# ---------------------------------------------------------------------------

BIN=/usr/bin/vidworker
CONF=/etc/vidworker

log() { printf 'vidworker-setup: %s\n' "$*" >&2; }

# A failed set-up must not leave a healthy-looking instance that takes no
# jobs: say why on the console, tell CloudFormation (once the package is in;
# before that, the group's signal times out all the same), then power off
# (the launch template makes that a termination) so the Auto Scaling group
# replaces the instance. The delay leaves time to read the console output.
on_error() {
    log "FAILED at line $1; powering off in 10 minutes (see /var/log/cloud-init-output.log)"
    if [ -x "$BIN" ]; then
        "$BIN" signal --stack "$STACK_NAME" --region "$REGION" --failure "set-up failed at line $1" || true
    fi
    shutdown -h +10 "vidworker set-up failed" || true
}

retry() {
    local attempt=1
    until "$@"; do
        if [ "$attempt" -ge 5 ]; then
            log "giving up after $attempt attempts: $*"
            return 1
        fi
        sleep $((attempt * 5))
        attempt=$((attempt + 1))
    done
}

# Installs the .deb at URL (https) if its SHA-256 is SHA256; NAME says what
# it is. AWS's agents are public objects in AWS's own buckets.
install_deb() {
    local name="$1" url="$2" sha256="$3" deb
    log "installing $name"
    deb="$(mktemp --suffix=.deb)"
    retry curl --fail --silent --show-error --location --proto '=https' --output "$deb" "$url"
    check_sha256 "$name" "$deb" "$sha256"
    retry apt-get -o DPkg::Lock::Timeout=300 install -y -q "$deb"
    rm -f "$deb"
}

check_sha256() {
    if ! echo "$3  $2" | sha256sum --check --quiet; then
        log "$1: SHA-256 $(sha256sum <"$2" | cut -c1-64), expected $3"
        return 1
    fi
}

# GET of the instance metadata (IMDSv2) path $1.
imds() {
    local token
    token="$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
        "$IMDS/latest/api/token")"
    curl -fsS -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/$1"
}
IMDS="$(printenv IMDS || echo http://169.254.169.254)"

# Downloads s3://bucket/key ($1, a bucket in this region) to $2 with the
# instance role's credentials: curl signs the request itself (SigV4), so
# no awscli on the boot path. deploy/check.py runs it against moto with
# signatures checked.
s3_get() {
    local role creds bucket key id secret token
    role="$(imds meta-data/iam/security-credentials/)"
    creds="$(imds "meta-data/iam/security-credentials/$role")"
    id="$(printf '%s' "$creds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKeyId"])')"
    secret="$(printf '%s' "$creds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["SecretAccessKey"])')"
    token="$(printf '%s' "$creds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Token"])')"
    bucket="$(printf '%s' "$1" | cut -d/ -f3)"
    key="$(printf '%s' "$1" | cut -d/ -f4-)"
    local url="https://$bucket.s3.$REGION.amazonaws.com/$key"
    if [ -n "$S3_ENDPOINT" ]; then
        url="$S3_ENDPOINT/$bucket/$key"
    fi
    curl --fail --silent --show-error \
        --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$id:$secret" \
        -H "x-amz-security-token: $token" \
        -H "x-amz-content-sha256: $EMPTY_SHA256" \
        --output "$2" "$url"
}
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
# Set by the tests (an emulator, path-style), never on EC2.
S3_ENDPOINT="$(printenv S3_ENDPOINT || true)"
S3_REGION="$(printenv S3_REGION || echo "$REGION")"

# Tests source this file for its functions (VIDWORKER_SETUP_LIBRARY=1).
if printenv VIDWORKER_SETUP_LIBRARY >/dev/null; then
    # shellcheck disable=SC2317 # sourced: return; run: the set-up below
    return 0 2>/dev/null || exit 0
fi
trap 'on_error $LINENO' ERR

log "installing the FFmpeg runtime libraries"
export DEBIAN_FRONTEND=noninteractive
# Wait for a boot-time apt run (unattended-upgrades) instead of failing.
retry apt-get -o DPkg::Lock::Timeout=300 update -q
retry apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
    libavcodec59 libavformat59 libavfilter8 libswscale6 libswresample4 libavutil57 \
    ca-certificates curl python3

# --- The CloudWatch agent: logs and the worker's metrics -------------------
# Early (after curl), so a failed set-up's log reaches CloudWatch before the
# power-off.
# The agent reads journald itself (why not a file: WorkerLogGroup's comment
# in the template).
install_deb "the CloudWatch agent $CWAGENT_VERSION" \
    "https://amazoncloudwatch-agent.s3.amazonaws.com/debian/amd64/$CWAGENT_VERSION/amazon-cloudwatch-agent.deb" \
    "$CWAGENT_SHA256"
CWAGENT=/opt/aws/amazon-cloudwatch-agent
# The group's name is a label: the alarms' dimension (the fleet, not one instance).
cat >"$CWAGENT/etc/prometheus.yaml" <<EOF
global: {scrape_interval: 1m, scrape_timeout: 10s}
scrape_configs:
  - job_name: vidworker
    static_configs:
      - targets: ["127.0.0.1:9464"]
        labels:
          AutoScalingGroupName: "$AUTOSCALING_GROUP_NAME"
          InstanceId: "$(cat /var/lib/cloud/data/instance-id)"
EOF
# Root reads the journal. A log stream per instance (EMF: one, "vidworker",
# records carry InstanceId); deploy/check.py checks this against the template.
sed "s|@LOG_GROUP@|$LOG_GROUP|g" >"$CWAGENT/etc/vidworker.json" <<'JSON'
{
  "agent": {"run_as_user": "root"},
  "logs": {
    "logs_collected": {
      "files": {"collect_list": [
        {"file_path": "/var/log/cloud-init-output.log", "log_group_name": "@LOG_GROUP@",
         "log_stream_name": "{instance_id}/cloud-init-output"}
      ]},
      "journald": {"collect_list": [
        {"units": ["vidworker.service"], "log_group_name": "@LOG_GROUP@",
         "log_stream_name": "{instance_id}/vidworker"},
        {"priority": "warning", "log_group_name": "@LOG_GROUP@",
         "log_stream_name": "{instance_id}/journal"}
      ]}
    },
    "metrics_collected": {"prometheus": {
      "log_group_name": "@LOG_GROUP@",
      "prometheus_config_path": "/opt/aws/amazon-cloudwatch-agent/etc/prometheus.yaml",
      "emf_processor": {
        "metric_namespace": "vidworker",
        "metric_declaration_dedup": true,
        "metric_unit": {"vidworker_stage_seconds_total": "Seconds"},
        "metric_declaration": [
          {"source_labels": ["job"], "label_matcher": "^vidworker$",
           "dimensions": [["AutoScalingGroupName"]],
           "metric_selectors": ["^vidworker_configuration_errors_total$"]},
          {"source_labels": ["job"], "label_matcher": "^vidworker$",
           "dimensions": [["AutoScalingGroupName", "outcome"]],
           "metric_selectors": ["^vidworker_jobs_total$"]},
          {"source_labels": ["job"], "label_matcher": "^vidworker$",
           "dimensions": [["AutoScalingGroupName", "action"]],
           "metric_selectors": ["^vidworker_reconciled_total$"]},
          {"source_labels": ["job"], "label_matcher": "^vidworker$",
           "dimensions": [["AutoScalingGroupName", "stage"]],
           "metric_selectors": ["^vidworker_stage_seconds_total$", "^vidworker_stage_runs_total$"]}
        ]
      }
    }}
  }
}
JSON
"$CWAGENT/bin/amazon-cloudwatch-agent-ctl" -a fetch-config -m ec2 -s -c "file:$CWAGENT/etc/vidworker.json"

# --- Session Manager: a shell for the runbook, no SSH, no open port -----------
install_deb "the SSM agent $SSM_AGENT_VERSION" \
    "https://s3.$REGION.amazonaws.com/amazon-ssm-$REGION/$SSM_AGENT_VERSION/debian_amd64/amazon-ssm-agent.deb" \
    "$SSM_AGENT_SHA256"
systemctl enable --now amazon-ssm-agent.service

# --- vidworker: the release package ------------------------------------------
# Binary, vidworker.service and vidworker-unhealthy.service, the RDS CA
# bundle (/usr/share/vidworker/rds-ca.pem), completions and man pages; its
# postinst makes the vidworker user and enables (not starts) the unit.
log "installing $PACKAGE_URI"
deb="$(mktemp --suffix=.deb)"
retry s3_get "$PACKAGE_URI" "$deb"
check_sha256 "$PACKAGE_URI" "$deb" "$PACKAGE_SHA256"
retry apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$deb"
rm -f "$deb"
# Fails here (and the instance is replaced) when a runtime library is missing.
"$BIN" --version

# The one value written between quotes: refuse what would break that
# quoting (a URL has these percent-encoded anyway). It holds no password:
# the worker reads the credentials from DATABASE_SECRET_ARN itself.
case "$DATABASE_URL" in
    *\'* | *\"* | *\\* | *[[:space:]]*)
        log "DatabaseUrl contains a quote, backslash or blank; percent-encode it"
        false
        ;;
esac

log "writing $CONF/env"
(
    umask 077
    cat >"$CONF/env.new" <<EOF
# Written by EC2 user data at first boot; read by vidworker.service.
DATABASE_SECRET_ARN=$DATABASE_SECRET_ARN
DATABASE_URL='$DATABASE_URL'
SQS_QUEUE_URL=$SQS_QUEUE_URL
S3_BUCKET=$S3_BUCKET
AWS_REGION=$REGION
EVENTS_TOPIC_ARN=$EVENTS_TOPIC_ARN
AUTOSCALING_GROUP_NAME=$AUTOSCALING_GROUP_NAME
LIFECYCLE_HOOK_NAME=$LIFECYCLE_HOOK_NAME
WORKER_CONCURRENCY=$WORKER_CONCURRENCY
SHUTDOWN_GRACE=$SHUTDOWN_GRACE
VISIBILITY_TIMEOUT=$VISIBILITY_TIMEOUT
MAX_ATTEMPTS=$MAX_ATTEMPTS
LIFECYCLE_TIMEOUT=600
RUN_MIGRATIONS=$RUN_MIGRATIONS
WORKER_TEMP_DIR=/var/lib/vidworker
# All interfaces: the security group admits scrapers only from MetricsCidr.
METRICS_ADDR=0.0.0.0:9464
LOG_FORMAT=json
EOF
)
chown root:root "$CONF/env.new"
chmod 0600 "$CONF/env.new"
mv "$CONF/env.new" "$CONF/env"

log "checking the settings and the services"
# WORKER_TEMP_DIR: the unit's StateDirectory, which systemd makes only when
# the unit starts; the check writes a file there first.
install -d -m 0700 -o vidworker -g vidworker /var/lib/vidworker
"$BIN" check --env-file "$CONF/env"

log "starting vidworker"
systemctl enable --now vidworker.service
# CloudFormation waits for this (the group's CreationPolicy and rolling
# update): SUCCESS once /readyz answers; FAILURE, and an exit that powers
# the instance off, if it does not within 5 minutes.
"$BIN" signal --stack "$STACK_NAME" --region "$REGION" --wait 300
log "done"

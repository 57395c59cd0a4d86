#!/bin/bash
# vidworker instance set-up: EC2 user data, run once as root by cloud-init on
# the Debian 12 AMI. Installs the FFmpeg runtime libraries and the release
# binary, writes /etc/vidworker/env, installs and starts vidworker.service.
#
# deploy/cloudformation.yaml embeds this file verbatim through Fn::Sub: only
# the block of values below uses the dollar-brace form (CloudFormation fills
# those in); nowhere else may a dollar sign be followed by a brace (write
# $name, never the braced form).
# After editing, run `deploy/check.py --sync-user-data` to copy it into the
# template; `deploy/check.py` fails while the two differ.
#
# Output goes to /var/log/cloud-init-output.log and the serial console. The
# database URL is never printed.
set -euo pipefail
umask 022

# --- filled in by CloudFormation (Fn::Sub) ---------------------------------
# shellcheck disable=SC2016 # literal here; CloudFormation substitutes them
readonly \
    REGION='${AWS::Region}' \
    ARTIFACT_URI='${ArtifactUri}' \
    ARTIFACT_SHA256='${ArtifactSha256}' \
    DATABASE_URL_SECRET_ARN='${DatabaseUrlSecretArn}' \
    S3_BUCKET='${Bucket}' \
    SQS_QUEUE_URL='${JobQueue}' \
    EVENTS_TOPIC_ARN='${EventsTopic}' \
    AUTOSCALING_GROUP_NAME='${AutoScalingGroupName}' \
    LIFECYCLE_HOOK_NAME='${LifecycleHookName}' \
    WORKER_CONCURRENCY='${WorkerConcurrency}' \
    SHUTDOWN_GRACE='${ShutdownGrace}' \
    VISIBILITY_TIMEOUT='${VisibilityTimeout}' \
    MAX_ATTEMPTS='${MaxAttempts}' \
    RUN_MIGRATIONS='${RunMigrations}'
# ---------------------------------------------------------------------------

RDS_CA_URL=https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
BIN=/usr/local/bin/vidworker
CONF=/etc/vidworker

log() { printf 'vidworker-setup: %s\n' "$*" >&2; }

# A failed set-up must not leave a healthy-looking instance that takes no
# jobs: say why on the console, then power off (the launch template makes
# that a termination) so the Auto Scaling group replaces the instance. The
# delay leaves time to read the console output.
on_error() {
    log "FAILED at line $1; powering off in 10 minutes (see /var/log/cloud-init-output.log)"
    shutdown -h +10 "vidworker set-up failed" || true
}
trap 'on_error $LINENO' ERR

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

log "installing the FFmpeg runtime libraries and tools"
export DEBIAN_FRONTEND=noninteractive
# aws-cli v2 (Debian 12's awscli) must not page its output.
export AWS_PAGER=""
# Wait for a boot-time apt run (unattended-upgrades) instead of failing.
retry apt-get -o DPkg::Lock::Timeout=300 update -q
retry apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
    libavcodec59 libavformat59 libavfilter8 libswscale6 libswresample4 libavutil57 \
    ca-certificates awscli curl

log "creating the vidworker system user"
if ! id vidworker >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /var/lib/vidworker \
        --shell /usr/sbin/nologin vidworker
fi

log "installing $ARTIFACT_URI"
tmp_bin="$(mktemp)"
retry aws s3 cp --only-show-errors --region "$REGION" "$ARTIFACT_URI" "$tmp_bin"
if [ -n "$ARTIFACT_SHA256" ]; then
    echo "$ARTIFACT_SHA256  $tmp_bin" | sha256sum --check --quiet
fi
install -m 0755 -o root -g root "$tmp_bin" "$BIN"
rm -f "$tmp_bin"
# Fails here (and the instance is replaced) when a runtime library is missing.
"$BIN" --version

log "fetching the RDS CA bundle"
install -d -m 0755 -o root -g root "$CONF"
retry curl --fail --silent --show-error --location --proto '=https' \
    --output "$CONF/rds-ca.pem.new" "$RDS_CA_URL"
grep -q 'BEGIN CERTIFICATE' "$CONF/rds-ca.pem.new"
chmod 0644 "$CONF/rds-ca.pem.new"
mv "$CONF/rds-ca.pem.new" "$CONF/rds-ca.pem"

log "reading the database URL from Secrets Manager"
DATABASE_URL="$(retry aws secretsmanager get-secret-value --region "$REGION" \
    --secret-id "$DATABASE_URL_SECRET_ARN" --query SecretString --output text)"
case "$DATABASE_URL" in
    postgres://* | postgresql://*) ;;
    *)
        log "the secret is not a postgres:// URL"
        false
        ;;
esac
# The value is single-quoted in the environment file: refuse what would
# break that quoting (a URL has these percent-encoded anyway).
case "$DATABASE_URL" in
    *\'* | *\"* | *\\* | *[[:space:]]*)
        log "the database URL contains a quote, backslash or blank; percent-encode it"
        false
        ;;
esac

log "writing $CONF/env"
(
    umask 077
    cat >"$CONF/env.new" <<EOF
# Written by EC2 user data at first boot; read by vidworker.service.
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
unset DATABASE_URL

log "installing vidworker.service"
cat >/etc/systemd/system/vidworker.service <<'UNIT'
# vidworker: takes video jobs from SQS until stopped.
# Installed by deploy/user-data.sh (embedded in deploy/cloudformation.yaml;
# deploy/check.py verifies the three copies agree). Never write a dollar
# sign followed by a brace here: the template embeds it through Fn::Sub.

[Unit]
Description=vidworker video-processing worker
Wants=network-online.target
After=network-online.target
# A crash loop (a bad binary, secret or security group) fails the unit
# after 5 starts in 10 minutes instead of restarting forever: the failed
# unit is what the instance's health check reports.
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# The worker speaks sd_notify: READY=1 once its start-up checks pass
# (PostgreSQL, SQS, S3, the rendition's assets) and it takes jobs, so
# "started" means working; STOPPING=1 when it drains. Its watchdog is fed
# from the same liveness check as /healthz (the receive loop and every
# job's heartbeat): a wedged worker stops feeding it and is restarted.
Type=notify
NotifyAccess=main
WatchdogSec=60
# Start-up checks each have a deadline well under this (migrations, when
# RUN_MIGRATIONS is on, are the longest).
TimeoutStartSec=180
ExecStart=/usr/local/bin/vidworker run
User=vidworker
Group=vidworker
# Written by user-data: DATABASE_URL, SQS_QUEUE_URL, S3_BUCKET, ... (0600
# root: systemd reads it before dropping privileges).
EnvironmentFile=/etc/vidworker/env
# WORKER_TEMP_DIR=/var/lib/vidworker: the one writable place besides
# PrivateTmp, created and owned for User= by systemd.
StateDirectory=vidworker
StateDirectoryMode=0700
WorkingDirectory=/var/lib/vidworker

# An exit after a drain (SIGTERM, or the instance leaving the Auto Scaling
# group) is status 0 and stays stopped; a crash is restarted.
Restart=on-failure
RestartSec=5

# Stopping: SIGTERM to the main process only (the transcode children
# would stop mid-job at once); the worker drains for SHUTDOWN_GRACE
# (90 s by default, at most 105 s as the template allows), hands
# unfinished jobs back (killing their children), exits.
# TimeoutStopSec = SHUTDOWN_GRACE 90 + 30 s margin; only past it does
# systemd SIGKILL the whole cgroup (KillMode=mixed).
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=120

LimitNOFILE=65536
UMask=0077

# Hardening. FFmpeg/x264 need none of what is taken away here: no devices
# (decoding is software only), no JIT, no capabilities, only IP sockets.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RemoveIPC=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
SystemCallFilter=@system-service
# What each transcode child confines itself with (Landlock, seccomp).
SystemCallFilter=seccomp landlock_create_ruleset landlock_add_rule landlock_restrict_self
SystemCallErrorNumber=EPERM
# W^X: FFmpeg and x264 generate no code at run time (their asm is static),
# and every library of Debian 12's libavfilter8/libavcodec59 closure (167
# objects, libx264 included) has a non-executable GNU_STACK and none is a
# JIT (no liborc). The hardware-acceleration loaders linked in (VA-API,
# VDPAU, OpenCL) would only load drivers when a hwaccel is opened, which
# vidworker never does. Remove this line first if a future codec needs JIT.
MemoryDenyWriteExecute=yes

[Install]
WantedBy=multi-user.target
UNIT
chmod 0644 /etc/systemd/system/vidworker.service

log "starting vidworker"
systemctl daemon-reload
systemctl enable --now vidworker.service
log "done"

#!/usr/bin/env bash
# Builds the container image from docker/Dockerfile and checks it for real:
# `vidworker process` on a fixture inside the container, `vidworker run` in
# the container against scripts/local-stack.sh (host network) processing a
# job end to end, a `docker stop` that lets a running job drain, the
# HEALTHCHECK, a non-root user, docker/compose.yaml accepted by
# docker-compose, and the release package installed into a fresh Debian 12
# container (scripts/deb-check.sh).
#
#   scripts/docker-check.sh
#
# Needs a running Docker engine (`docker info`), and, with no registry in
# reach, a local debian:bookworm-slim image (made here with mmdebstrap if it
# is missing and mmdebstrap is installed). The binary is built on this host
# (release) and handed to the Dockerfile through its BUILDER argument, so the
# check does not need the official Rust image. Too slow for every CI run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

IMAGE=vidworker:check
NAME=vidworker-check
STOP_TIMEOUT=100
step() { printf '==> %s\n' "$*"; }
pass() { printf 'ok: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    docker logs "$NAME" 2>&1 | tail -20 >&2 || true
    exit 1
}
cleanup() { docker rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

docker info >/dev/null 2>&1 || {
    echo "no Docker engine answers (docker info); start one, e.g. dockerd --storage-driver=vfs --iptables=false --bridge=none" >&2
    exit 2
}

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    command -v mmdebstrap >/dev/null || {
        echo "debian:bookworm-slim is missing and cannot be pulled here; install mmdebstrap to make it" >&2
        exit 2
    }
    step "making debian:bookworm-slim from Debian packages (mmdebstrap)"
    mmdebstrap --variant=minbase bookworm - | docker import - debian:bookworm-slim >/dev/null
fi

step "building the release binary on the host"
cargo build --release --locked -q -p vidworker
BIN="$ROOT/target/release/vidworker"
COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"

step "building $IMAGE (BUILDER = an image holding the host's binary)"
prebuilt="$(mktemp -d)"
cp "$BIN" "$prebuilt/vidworker"
printf 'FROM debian:bookworm-slim\nCOPY vidworker /out/vidworker\n' |
    docker build -q -t vidworker-prebuilt:check -f - "$prebuilt" >/dev/null
rm -rf -- "$prebuilt"
started=$(date +%s)
docker build --network host -q \
    --build-arg BUILDER=vidworker-prebuilt:check \
    --build-arg VIDWORKER_COMMIT="$COMMIT" \
    -f docker/Dockerfile -t "$IMAGE" . >/dev/null
build_s=$(($(date +%s) - started))
size_mb=$(($(docker image inspect -f '{{.Size}}' "$IMAGE") / 1000000))
pass "image built in ${build_s} s, ${size_mb} MB"

user=$(docker run --rm --entrypoint id "$IMAGE" -u)
[[ "$user" != 0 ]] || fail "the image runs as root"
pass "runs as uid $user, not root"
health=$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")
[[ "$health" == *'"vidworker","healthcheck"'* || "$health" == *'/usr/local/bin/vidworker","healthcheck"'* ]] ||
    fail "HEALTHCHECK is $health"
pass "HEALTHCHECK runs vidworker healthcheck (GET /healthz)"
version=$(docker run --rm "$IMAGE" --version)
[[ "$version" == *"commit $COMMIT"* ]] || fail "--version says: $version"
pass "$version"

step "vidworker process inside the container"
out="$(mktemp -d)"
chmod 0777 "$out"
docker run --rm --network none -v "$ROOT/fixtures:/fixtures:ro" -v "$out:/out" "$IMAGE" \
    process /fixtures/portrait-rotated.mp4 -o /out/portrait.mp4
# No backslash inside an f-string's braces: that is Python 3.12 syntax,
# and Debian 12 has 3.11.
dims=$("$BIN" probe --json "$out/portrait.mp4" | python3 -c 'import json,sys; i=json.load(sys.stdin); print("%sx%s" % (i["display_width"], i["display_height"]))')
rm -rf -- "$out"
[[ "$dims" == 1280x720 ]] || fail "the rendition is $dims"
pass "process: a 1280x720 rendition"

step "vidworker run in the container against scripts/local-stack.sh"
scripts/local-stack.sh start >/dev/null
eval "$(scripts/local-stack.sh env)"
"$BIN" migrate >/dev/null 2>&1
"$BIN" queue-init >/dev/null
envfile="$(mktemp)"
scripts/local-stack.sh env | sed 's/^export //' >"$envfile"
printf 'VISIBILITY_TIMEOUT=30\nRECEIVE_WAIT_SECONDS=2\nSHUTDOWN_GRACE=90\nRENDITION_PRESET=veryfast\n' >>"$envfile"
metrics_port=19464
printf 'METRICS_ADDR=127.0.0.1:%s\n' "$metrics_port" >>"$envfile"
wait_status() { # id status seconds
    local deadline=$(($(date +%s) + $3))
    while (($(date +%s) < deadline)); do
        "$BIN" status "$1" 2>/dev/null | grep -q "status: $2" && return 0
        sleep 1
    done
    return 1
}
first=$("$BIN" submit fixtures/landscape-1080p30.mp4 | awk '{print $1}')
docker run -d --name "$NAME" --network host --env-file "$envfile" --stop-timeout "$STOP_TIMEOUT" "$IMAGE" >/dev/null
wait_status "$first" processed 120 || fail "the job did not get processed"
pass "run: $first processed end to end"
docker exec "$NAME" vidworker healthcheck || fail "healthcheck inside the container"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -q 'vidworker_jobs_total{outcome="processed",kind="none"} 1' ||
    curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -q 'vidworker_jobs_total{kind="none",outcome="processed"} 1' ||
    fail "/metrics does not count the job"
pass "/healthz answers inside the container; /metrics counts the job"

step "docker stop lets a running job drain"
slow=$("$BIN" submit fixtures/long-40s.mp4 | awk '{print $1}')
wait_status "$slow" processing 60 || fail "the slow job did not start"
started=$(date +%s)
docker stop -t "$STOP_TIMEOUT" "$NAME" >/dev/null
stop_s=$(($(date +%s) - started))
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[[ "$code" == 0 ]] || fail "exit code $code after docker stop"
"$BIN" status "$slow" | grep -q "status: processed" || fail "the running job was not finished"
[[ "$(docker inspect -f '{{.Config.StopSignal}}' "$NAME")" == SIGTERM ]] || fail "stop signal"
pass "docker stop -t $STOP_TIMEOUT: the running job finished (stop took ${stop_s} s), exit 0"
rm -f "$envfile"

step "docker/compose.yaml"
command -v docker-compose >/dev/null || fail "docker-compose is missing (apt install docker-compose)"
docker-compose -f docker/compose.yaml config -q || fail "docker-compose rejects docker/compose.yaml"
config="$(docker-compose -f docker/compose.yaml config)"
for want in "stop_grace_period: 105s" "S3_BUCKET: $S3_BUCKET" "SQS_QUEUE_URL: http://moto:5000/123456789012/vidworker-jobs"; do
    grep -q "$want" <<<"$config" || fail "compose lacks $want"
done
# Ports, in either form docker-compose prints them: "55432:5432" (v2), or
# published/target pairs (Debian 12's 1.29 prints the long form).
for pair in 55432:5432 5000:5000; do
    published=${pair%%:*} target=${pair##*:}
    grep -q "$pair" <<<"$config" || python3 -c '
import re, sys
published, target = sys.argv[1:]
lines = sys.stdin.read().splitlines()
found = any(
    re.fullmatch(r"-?\s*published:\s*\"?%s\"?" % published, line.strip())
    and any(re.fullmatch(r"-?\s*target:\s*%s" % target, near.strip()) for near in lines[max(0, i - 3):i + 4])
    for i, line in enumerate(lines)
)
sys.exit(0 if found else 1)' "$published" "$target" <<<"$config" || fail "compose lacks port $pair"
done
pass "docker-compose config accepts docker/compose.yaml; its names and ports match the local stack"

step "the .deb of scripts/release.sh in a fresh Debian 12 container"
scripts/deb-check.sh || fail "the package check (above)"
echo "docker check passed"

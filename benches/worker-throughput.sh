#!/usr/bin/env bash
# Throughput of the whole worker on the local stack (PostgreSQL + moto, as
# scripts/local-stack.sh runs them) next to the ffmpeg CLI run back to back
# on the same files, in videos per hour.
#
#   benches/worker-throughput.sh [N] [untagged|bt709]   # default 8 untagged
#
# The worker side is everything a production job does: receive, claim,
# download the 113 MB original from S3, transcode, upload rendition and
# poster, record, delete; the CLI side only transcodes local files (no
# poster), so the comparison favours the CLI. Uses the reference upload of
# benches/make-reference.sh and vidworker's default concurrency and
# prefetch (WORKER_CONCURRENCY / WORKER_PREFETCH in the environment
# override them). Starts the local stack if it is not running and leaves it
# as it found it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-8}"
KIND="${2:-untagged}"
cd "$ROOT"
cargo build --release -q -p vidworker
BIN="$ROOT/target/release/vidworker"
LOGO="$ROOT/crates/processor/assets/logo.png"
mapfile -t REFS < <(benches/make-reference.sh)
case "$KIND" in
    untagged) SRC="${REFS[0]}" ;;
    bt709) SRC="${REFS[1]}" ;;
    *) echo "error: kind $KIND is neither untagged nor bt709" >&2; exit 2 ;;
esac
OUT="$(mktemp -d)"
started_stack=
cleanup() {
    [[ -n "${WORKER_PID:-}" ]] && kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
    [[ -n "$started_stack" ]] && scripts/local-stack.sh stop >/dev/null
    rm -rf -- "$OUT"
}
trap cleanup EXIT

if ! scripts/local-stack.sh status >/dev/null 2>&1; then
    scripts/local-stack.sh start >/dev/null
    started_stack=1
fi
eval "$(scripts/local-stack.sh env)"
"$BIN" migrate >/dev/null
"$BIN" queue-init >/dev/null

# The same upload N times (N rows, N messages), before the worker starts.
files=()
for i in $(seq 1 "$N"); do
    ln -s "$SRC" "$OUT/upload-$i.mp4"
    files+=("$OUT/upload-$i.mp4")
done
mapfile -t IDS < <("$BIN" submit "${files[@]}" 2>/dev/null | grep -Eo '[0-9a-f]{8}-[0-9a-f-]{27}')
[[ ${#IDS[@]} -eq $N ]] || { echo "error: submitted ${#IDS[@]} of $N" >&2; exit 1; }
list=$(printf "'%s'," "${IDS[@]}")
settled() {
    psql "$DATABASE_URL" -Atc "SELECT count(*) FROM videos WHERE id IN (${list%,}) AND status IN ('processed', 'failed')"
}

start=$(date +%s.%N)
RECEIVE_WAIT_SECONDS=1 METRICS_ADDR=off LOG_FORMAT=json "$BIN" run 2>"$OUT/worker.log" &
WORKER_PID=$!
while [[ "$(settled)" -lt "$N" ]]; do
    kill -0 "$WORKER_PID" 2>/dev/null || { echo "error: the worker exited:" >&2; tail -5 "$OUT/worker.log" >&2; exit 1; }
    sleep 0.2
done
worker_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
kill -TERM "$WORKER_PID"
wait "$WORKER_PID" || true
WORKER_PID=
failed=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM videos WHERE id IN (${list%,}) AND status = 'failed'")
[[ "$failed" -eq 0 ]] || { echo "error: $failed videos failed" >&2; exit 1; }
concurrency=$(grep -o '"concurrency":[0-9]*' "$OUT/worker.log" | head -1 | cut -d: -f2)

# shellcheck source=benches/cli-rendition.sh
source "$ROOT/benches/cli-rendition.sh"
start=$(date +%s.%N)
for f in "${files[@]}"; do
    cli_rendition "$f" "$LOGO" "$OUT/cli.mp4"
done
cli_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')

awk -v n="$N" -v w="$worker_s" -v c="$cli_s" -v k="$KIND" -v conc="${concurrency:-?}" -v cores="$(nproc)" 'BEGIN {
    printf "%d jobs, reference upload (%s), %d cores, worker concurrency %s\n", n, k, cores, conc
    printf "%-34s %8s %10s %10s\n", "", "wall s", "s/video", "videos/h"
    printf "%-34s %8.1f %10.2f %10.0f\n", "vidworker run (S3+SQS+PostgreSQL)", w, w / n, 3600 * n / w
    printf "%-34s %8.1f %10.2f %10.0f\n", "ffmpeg CLI back to back", c, c / n, 3600 * n / c
    printf "vidworker / CLI: %.2fx the videos per hour\n", c / w
}'

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

# CPU seconds (user + system) a process and its children have used so far.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
# PostgreSQL is one process per connection: the postmaster (with the
# backends that have exited) plus the live ones.
pg_cpu_s() {
    local main total pid
    main="$(head -1 "$ROOT/.local/pg/postmaster.pid")"
    total=$(cpu_s "$main")
    for pid in $(pgrep -P "$main" || true); do
        total=$(awk -v t="$total" -v c="$(cpu_s "$pid")" 'BEGIN { print t + c }')
    done
    echo "$total"
}
MOTO="$(cat "$ROOT/.local/moto.pid")"
METRICS_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
moto_before=$(cpu_s "$MOTO")
pg_before=$(pg_cpu_s)

start=$(date +%s.%N)
RECEIVE_WAIT_SECONDS=1 METRICS_ADDR="127.0.0.1:$METRICS_PORT" LOG_FORMAT=json "$BIN" run 2>"$OUT/worker.log" &
WORKER_PID=$!
# Counted in the worker's log, not with psql: a connection five times a
# second would add PostgreSQL backends to what is measured.
finished() { grep -cE '"event":"(processed|failed)"' "$OUT/worker.log" || true; }
while [[ "$(finished)" -lt "$N" ]]; do
    kill -0 "$WORKER_PID" 2>/dev/null || { echo "error: the worker exited:" >&2; tail -5 "$OUT/worker.log" >&2; exit 1; }
    sleep 0.2
done
worker_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
worker_cpu=$(cpu_s "$WORKER_PID")
worker_rss=$(awk '/^VmHWM:/ { print $2 / 1024 }' "/proc/$WORKER_PID/status")
moto_cpu=$(awk -v a="$moto_before" -v b="$(cpu_s "$MOTO")" 'BEGIN { print b - a }')
pg_cpu=$(awk -v a="$pg_before" -v b="$(pg_cpu_s)" 'BEGIN { print b - a }')
# Seconds per stage, summed over the jobs (stages of different jobs overlap).
python3 - "$METRICS_PORT" >"$OUT/stages" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
sums = dict(re.findall(r'^vidworker_stage_duration_seconds_sum\{stage="(\w+)"\} (\S+)', text, re.M))
print(" ".join(f"{k}={float(sums.get(k, 0)):.1f}" for k in ("download", "transcode", "upload", "record")))
PY
kill -TERM "$WORKER_PID"
wait "$WORKER_PID" || true
WORKER_PID=
processed=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM videos WHERE id IN (${list%,}) AND status = 'processed'")
[[ "$processed" -eq "$N" ]] || { echo "error: $processed of $N videos processed" >&2; exit 1; }
concurrency=$(grep -o '"concurrency":[0-9]*' "$OUT/worker.log" | head -1 | cut -d: -f2)

# shellcheck source=benches/cli-rendition.sh
source "$ROOT/benches/cli-rendition.sh"
start=$(date +%s.%N)
for f in "${files[@]}"; do
    cli_rendition "$f" "$LOGO" "$OUT/cli.mp4"
done
cli_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')

awk -v n="$N" -v w="$worker_s" -v c="$cli_s" -v k="$KIND" -v conc="${concurrency:-?}" -v cores="$(nproc)" \
    -v wc="$worker_cpu" -v rss="$worker_rss" -v mc="$moto_cpu" -v pc="$pg_cpu" -v stages="$(cat "$OUT/stages")" 'BEGIN {
    printf "%d jobs, reference upload (%s), %d cores, worker concurrency %s\n", n, k, cores, conc
    printf "%-34s %8s %10s %10s\n", "", "wall s", "s/video", "videos/h"
    printf "%-34s %8.1f %10.2f %10.0f\n", "vidworker run (S3+SQS+PostgreSQL)", w, w / n, 3600 * n / w
    printf "%-34s %8.1f %10.2f %10.0f\n", "ffmpeg CLI back to back", c, c / n, 3600 * n / c
    printf "vidworker / CLI: %.2fx the videos per hour\n", c / w
    printf "CPU s during the worker run: vidworker %.1f (%.2f per video), moto %.1f, PostgreSQL %.1f\n", wc, wc / n, mc, pc
    printf "vidworker peak RSS: %.0f MiB\n", rss
    printf "stage s summed over jobs: %s\n", stages
}'

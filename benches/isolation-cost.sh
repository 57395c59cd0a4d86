#!/usr/bin/env bash
# What running each transcode in a sandboxed child costs: the worker on the
# local stack (as benches/worker-throughput.sh runs it) with ISOLATION=child
# and ISOLATION=in-process, alternating, N jobs of the reference upload per
# run, without the CLI half of worker-throughput.sh.
#
#   benches/isolation-cost.sh [N] [ROUNDS]    # default 3 jobs, 3 rounds
#
# CPU is the worker's and its reaped children's (user + system), so both
# modes count the same work. Starts the local stack if it is not running
# and leaves it as it found it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-3}"
ROUNDS="${2:-3}"
cd "$ROOT"
cargo build --release -q -p vidworker
BIN="$ROOT/target/release/vidworker"
mapfile -t REFS < <(benches/make-reference.sh)
SRC="${REFS[0]}"
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

cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"
}
printf "%-6s %-11s %8s %10s %14s\n" round isolation "wall s" videos/h "CPU s/video"
for round in $(seq 1 "$ROUNDS"); do
    for isolation in child in-process; do
        files=()
        for i in $(seq 1 "$N"); do
            ln -sf "$SRC" "$OUT/upload-$round-$isolation-$i.mp4"
            files+=("$OUT/upload-$round-$isolation-$i.mp4")
        done
        "$BIN" submit "${files[@]}" >/dev/null 2>&1
        start=$(date +%s.%N)
        ISOLATION=$isolation RECEIVE_WAIT_SECONDS=1 LOG_FORMAT=json METRICS_ADDR=off "$BIN" run 2>"$OUT/worker.log" &
        WORKER_PID=$!
        while [[ "$(grep -cE '"event":"(processed|failed)"' "$OUT/worker.log" || true)" -lt "$N" ]]; do
            kill -0 "$WORKER_PID" 2>/dev/null || { echo "error: the worker exited:" >&2; tail -5 "$OUT/worker.log" >&2; exit 1; }
            sleep 0.2
        done
        wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
        cpu=$(cpu_s "$WORKER_PID")
        kill -TERM "$WORKER_PID"
        wait "$WORKER_PID" || true
        WORKER_PID=
        grep -q '"event":"failed"' "$OUT/worker.log" && { echo "error: a job failed" >&2; exit 1; }
        awk -v r="$round" -v i="$isolation" -v w="$wall" -v c="$cpu" -v n="$N" \
            'BEGIN { printf "%-6s %-11s %8.1f %10.0f %14.2f\n", r, i, w, 3600 * n / w, c / n }'
    done
done

#!/usr/bin/env bash
# Wall time, peak memory and output size of `vidworker process` next to the
# ffmpeg command line doing the same job (same filter chain, same x264
# settings, same 30 s cap, no audio, faststart), on the fixtures.
#
#   benches/compare-ffmpeg.sh [RUNS]     # default 3 runs each, median shown
#
# Builds vidworker in release mode first. Needs the ffmpeg CLI (installed by
# scripts/install-deps.sh) and python3 (for timing children's peak RSS).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-3}"
cd "$ROOT"
cargo build --release -q -p vidworker
BIN="$ROOT/target/release/vidworker"
LOGO="$ROOT/crates/processor/assets/logo.png"
OUT="$(mktemp -d)"
trap 'rm -rf -- "$OUT"' EXIT

# Runs a command RUNS times; prints "median_seconds max_rss_kib".
measure() {
    python3 - "$RUNS" "$@" <<'PY'
import resource, subprocess, sys, time
runs = int(sys.argv[1]); cmd = sys.argv[2:]
times = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append(time.perf_counter() - t)
times.sort()
print(f"{times[len(times)//2]:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}

# The ffmpeg equivalent of the default rendition at FPS.
ffmpeg_job() {
    local input=$1 fps=$2 out=$3
    ffmpeg -nostdin -y -v error -i "$input" -i "$LOGO" -filter_complex \
        "[0:v]fps=$fps,scale=w=1280:h=720:force_original_aspect_ratio=decrease:force_divisible_by=2:out_range=tv:out_color_matrix=bt709,format=yuv420p,setsar=1,pad=1280:720:(ow-iw)/2:(oh-ih)/2:color=black[v];[1:v]format=rgba,scale=128:128:flags=lanczos,colorchannelmixer=aa=0.85[wm];[v][wm]overlay=x=1128:y=568:format=yuv420,format=yuv420p[out]" \
        -map "[out]" -t 30 -an -c:v libx264 -preset medium -crf 23 -profile:v high -g $((fps * 2)) \
        -movflags +faststart "$out"
}

printf '%-24s %-9s %8s %10s %10s\n' fixture tool seconds "peak MiB" "out KiB"
for spec in "landscape-1080p30.mp4 30" "uhd-4k60.mp4 30" "portrait-rotated.mp4 30" "long-40s.mp4 10" "long-10min.mp4 5"; do
    set -- $spec
    f=$1 fps=$2
    read -r t rss < <(measure "$BIN" process "fixtures/$f" -o "$OUT/vw.mp4")
    printf '%-24s %-9s %8s %10.1f %10d\n' "$f" vidworker "$t" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" $(($(stat -c %s "$OUT/vw.mp4") / 1024))
    read -r t rss < <(measure bash -c "$(declare -f ffmpeg_job); LOGO='$LOGO' ffmpeg_job 'fixtures/$f' $fps '$OUT/ff.mp4'")
    printf '%-24s %-9s %8s %10.1f %10d\n' "" ffmpeg "$t" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" $(($(stat -c %s "$OUT/ff.mp4") / 1024))
done

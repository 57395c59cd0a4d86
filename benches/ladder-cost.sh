#!/usr/bin/env bash
# What the rate cap and the ladder cost, with `vidworker process` (release
# build) on the reference upload and the high-motion clip of
# benches/make-content.sh:
#
#   uncapped   --maxrate 0: CRF 23 alone, as before the cap
#   capped     the defaults: CRF 23 under the 720p cap (4500 kb/s, 9000 kbit buffer)
#   ladder     --renditions 720p,360p --hls --storyboard
#
# For each: CPU seconds (user + system of the process and its threads),
# wall, peak RSS, bytes written (every file), and the primary rendition's
# average and peak one-second rate (measured from its packets, as the
# summary line prints them).
#
#   benches/ladder-cost.sh [ROUNDS]    # default 2; configurations alternate
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${1:-2}"
cd "$ROOT"
cargo build --release -q -p vidworker
BIN="$ROOT/target/release/vidworker"
mapfile -t REFS < <(benches/make-reference.sh)
mapfile -t CONTENT < <(benches/make-content.sh)
OUT="$(mktemp -d)"
trap 'rm -rf -- "$OUT"' EXIT

declare -A FLAGS=(
    [uncapped]="--maxrate 0"
    [capped]=""
    [ladder]="--renditions 720p,360p --hls --storyboard"
)
printf "%-13s %-9s %5s %7s %7s %8s %9s %8s %9s\n" input config round "CPU s" "wall s" "RSS MiB" bytes "avg kb/s" "peak kb/s"
for src in "${REFS[0]}" "${CONTENT[0]}"; do
    name="$(basename "$src" | cut -d- -f1-2)"
    for round in $(seq "$ROUNDS"); do
        for config in uncapped capped ladder; do
            rm -rf -- "${OUT:?}"/*
            # shellcheck disable=SC2086 # the flags are words
            /usr/bin/time -f "%U %S %e %M" -o "$OUT/time" \
                "$BIN" process "$src" -o "$OUT/out.mp4" ${FLAGS[$config]} >"$OUT/log" 2>&1
            read -r user sys wall rss <"$OUT/time"
            bytes="$(find "$OUT" -type f \( -name '*.mp4' -o -name '*.m4s' -o -name '*.m3u8' -o -name '*.jpg' -o -name '*.vtt' \) -printf '%s\n' | awk '{ s += $1 } END { print s }')"
            # "720p 1280x720 4.1 MB, 2600 kb/s on average, 4400 kb/s at the peak second: …"
            rates="$(grep -Eo '[0-9]+ kb/s on average, [0-9]+ kb/s at the peak' "$OUT/log" | head -1 | awk '{ print $1, $5 }')"
            # shellcheck disable=SC2086 # the two rates are two words
            printf "%-13s %-9s %5s %7.1f %7.1f %8.0f %9s %8s %9s\n" "$name" "$config" "$round" \
                "$(echo "$user + $sys" | bc)" "$wall" "$((rss / 1024))" "$bytes" ${rates:-"- -"}
        done
    done
done

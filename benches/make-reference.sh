#!/usr/bin/env bash
# The reference uploads of the benchmarks: 60 s of 1080p30 H.264 at
# 15 Mb/s (a typical phone's bit rate), once with no colour tags (ffprobe
# shows color_space=unknown, as most phone uploads after an editing app or
# a messenger) and once the same bitstream tagged BT.709 (h264_metadata).
# The picture is testsrc2 (moving patterns, text, colour bars) with
# light temporal noise (strength 3), so the encoder sees sensor-like grain
# that changes every frame rather than a clean test card, without the noise
# dominating the encode (strength 8 made x264 five times slower than on
# real phone footage).
#
#   benches/make-reference.sh [DIR]    # default target/bench-inputs
#
# Prints the two paths. Made once (about a minute); later calls reuse them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/target/bench-inputs}"
UNTAGGED="$DIR/reference-1080p30-60s-n3-untagged.mp4"
TAGGED="$DIR/reference-1080p30-60s-n3-bt709.mp4"
mkdir -p "$DIR"

if [[ ! -s "$UNTAGGED" ]]; then
    ffmpeg -nostdin -y -v error \
        -f lavfi -i "testsrc2=size=1920x1080:rate=30,format=yuv420p,noise=alls=3:allf=t" \
        -t 60 -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p \
        -b:v 15M -maxrate 15M -bufsize 30M -g 60 -an \
        "$UNTAGGED.tmp.mp4"
    mv "$UNTAGGED.tmp.mp4" "$UNTAGGED"
fi
if [[ ! -s "$TAGGED" ]]; then
    ffmpeg -nostdin -y -v error -i "$UNTAGGED" -c copy \
        -bsf:v "h264_metadata=colour_primaries=1:transfer_characteristics=1:matrix_coefficients=1:video_full_range_flag=0" \
        "$TAGGED.tmp.mp4"
    mv "$TAGGED.tmp.mp4" "$TAGGED"
fi
space=$(ffprobe -v error -select_streams v:0 -show_entries stream=color_space -of csv=p=0 "$UNTAGGED")
[[ "$space" == "unknown" || -z "$space" ]] || { echo "error: $UNTAGGED is tagged $space" >&2; exit 1; }
space=$(ffprobe -v error -select_streams v:0 -show_entries stream=color_space -of csv=p=0 "$TAGGED")
[[ "$space" == "bt709" ]] || { echo "error: $TAGGED is tagged ${space:-nothing}, not bt709" >&2; exit 1; }
echo "$UNTAGGED"
echo "$TAGGED"

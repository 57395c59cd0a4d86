# Sourced by the benchmark scripts: the ffmpeg command line a team would
# run for vidworker's default rendition (same geometry and logo: 10 % of the
# width, 24 px from the bottom-right corner, 85 % opaque; scale with
# FFmpeg's defaults, no colour conversion; x264 medium CRF 23, a keyframe
# every 2 s, no audio, faststart).
# shellcheck shell=bash
CLI_FILTER="[0:v]scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2:black,setsar=1[s];[1:v]format=rgba,scale=128:-1:flags=lanczos,colorchannelmixer=aa=0.85[w];[s][w]overlay=W-w-24:H-h-24:format=yuv420,format=yuv420p[v]"
export CLI_FILTER

# cli_rendition INPUT LOGO OUTPUT
cli_rendition() {
    ffmpeg -nostdin -y -v error -i "$1" -i "$2" -t 30 -filter_complex "$CLI_FILTER" -map "[v]" -an \
        -c:v libx264 -preset medium -crf 23 -profile:v high -g 60 -pix_fmt yuv420p -movflags +faststart "$3"
}

#!/usr/bin/env bash
# The content set of the quality and rate measurements, made here from
# FFmpeg's synthetic sources (no downloads), each 20 s of 1080p30 H.264 at
# a phone's bit rate (20 Mb/s), beside the reference upload of
# benches/make-reference.sh:
#
#   high-motion   a crowd-like texture (a Game of Life field, blocky cells
#                 with grain) under a fast pan (up to 1100 px/s) and camera
#                 shake (50 px at 3.7 Hz), two small fast objects crossing
#                 the frame: sport filmed from the stands;
#   dark-indoor   a dim, low-contrast moving picture under heavy sensor
#                 noise: a gym at night on a phone;
#   talking-head  a still background and a slowly moving face-sized shape
#                 with light grain: an interview.
#
#   benches/make-content.sh [DIR]    # default target/bench-inputs
#
# Prints the paths. Made once (about a minute each); later calls reuse them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/target/bench-inputs}"
mkdir -p "$DIR"

# name lavfi-graph
make() {
    local out="$DIR/$1-1080p30-20s.mp4"
    if [[ ! -s "$out" ]]; then
        ffmpeg -nostdin -y -v error -f lavfi -i "$2,format=yuv420p" -t 20 \
            -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p \
            -b:v 20M -maxrate 20M -bufsize 40M -g 60 -an "$out.tmp.mp4"
        mv "$out.tmp.mp4" "$out"
    fi
    echo "$out"
}

make high-motion "life=s=480x270:r=30:ratio=0.45:mold=8:life_color=#d8b070:death_color=#1a2a44:mold_color=#5a7090,\
scale=2880x1620:flags=neighbor,noise=alls=16:allf=t+u,\
crop=1920:1080:x='480+470*sin(t*2.3)':y='270+50*sin(t*23)',\
drawbox=x='mod(t*1900\,1920)':y='400+250*sin(t*4)':w=36:h=36:color=orange:t=fill,\
drawbox=x='1900-mod(t*1300\,1920)':y=700:w=24:h=24:color=white:t=fill"
make dark-indoor "testsrc2=size=1920x1080:rate=30,eq=brightness=-0.32:contrast=0.45:saturation=0.6,\
noise=alls=28:allf=t+u"
make talking-head "smptehdbars=size=1920x1080:rate=30,boxblur=20:2,eq=brightness=-0.1:saturation=0.4,\
drawbox=x='800+60*sin(t*0.7)':y='300+20*sin(t*1.1)':w=320:h=420:color=#c89070:t=fill,\
drawbox=x='880+60*sin(t*0.7)':y='420+20*sin(t*1.1)':w=40:h=20:color=#402010:t=fill,\
drawbox=x='1000+60*sin(t*0.7)':y='420+20*sin(t*1.1)':w=40:h=20:color=#402010:t=fill,\
noise=alls=4:allf=t"

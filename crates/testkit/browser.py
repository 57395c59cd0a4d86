#!/usr/bin/env python3
"""Plays a rendition in a real headless Chromium, as a viewer would, and prints
what the page saw as one JSON object on stdout.

    browser.py --video PATH_OR_URL [--poster PATH_OR_URL] [--pixel X,Y]
    browser.py --hls DIR_OR_URL --hls-js PATH

The second form plays an HLS ladder with hls.js (a local directory holding
master.m3u8, or the URL of a master playlist): hls.js starts on the lowest
level, is switched to the highest after a second of playback, and plays to
the end; the page reports the levels the master playlist declared and those
fragments were loaded from.

The page is served on 127.0.0.1 by a small HTTP server that answers Range
requests the way S3 does (206 Partial Content, Accept-Ranges): Chromium can
only seek in a resource served with byte ranges, and Python's http.server
does not do ranges. A local path is served by that server; an http:// URL
(a moto S3 object, presigned or plain) is loaded from where it is.

The scenario, in real time (headless Chromium's virtual time does not drive
media playback):
  metadata -> play -> playback past 0.5 s -> seek to 37 % -> playback on ->
  seek to 71 % -> playback on -> seek to the last second -> `ended`.
At each step the page records the time reached and the RGBA of the pixel
given by --pixel as Chromium rendered it (the video is loaded with CORS, so
this works on another origin that allows it, as moto does). Any MediaError
ends the run with Chromium's own message. The poster is loaded in an <img>
and its natural size reported.

Exit status 0 whenever a JSON result was printed (the caller asserts on it);
2 when the harness itself could not run (no Chromium, no selenium).

Debian 12's chromium + chromium-driver and selenium in the venv; run with the
venv's Python (scripts/install-deps.sh installs all three).
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import urllib.parse
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

CHROMIUM = os.environ.get("VIDWORKER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VIDWORKER_CHROMEDRIVER", "/usr/bin/chromedriver")

# How long one step of the scenario may take, in milliseconds. Generous: the
# machine may be busy compiling or transcoding beside the test.
STEP_MS = 30000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>vidworker playback</title></head>
<body style="margin:0;background:#222"></body></html>
"""

# Runs inside the page with Selenium's execute_async_script: the last
# argument is the callback that hands the result back.
# Both scenarios wait with this: a condition polled every 20 ms, failing at
# once on a MediaError (r.error) and after stepMs with the element's state.
UNTIL = r"""const until = (cond, what) => new Promise((resolve, reject) => {
  const started = performance.now();
  const tick = () => {
    if (r.error) return reject(new Error(r.error));
    if (cond()) return resolve();
    if (performance.now() - started > stepMs) {
      return reject(new Error(`timed out after ${stepMs} ms waiting for ${what} ` +
        `(currentTime ${v.currentTime.toFixed(3)}, readyState ${v.readyState}, ` +
        `networkState ${v.networkState}, paused ${v.paused})`));
    }
    setTimeout(tick, 20);
  };
  tick();
});"""

SCENARIO = r"""
const [src, posterSrc, pixel, stepMs, done] = arguments;
const r = {steps: [], error: null, ended: false, poster: null};
const v = document.createElement('video');
v.muted = true;
// CORS, so the frame can be read back from a canvas wherever the video is
// served from (moto answers `Access-Control-Allow-Origin: *`; same-origin
// files need nothing).
v.crossOrigin = 'anonymous';
v.playsInline = true;
v.preload = 'auto';
v.width = 320;
document.body.appendChild(v);
v.addEventListener('error', () => {
  const e = v.error;
  r.error = e ? `MediaError ${e.code}: ${e.message}` : 'MediaError (no details)';
});
@UNTIL@
const canvas = document.createElement('canvas');
const sample = () => {
  if (!pixel || !v.videoWidth) return null;
  canvas.width = v.videoWidth;
  canvas.height = v.videoHeight;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  ctx.drawImage(v, 0, 0);
  try {
    return Array.from(ctx.getImageData(pixel[0], pixel[1], 1, 1).data);
  } catch (e) {
    return null; // another origin without CORS: the canvas is tainted
  }
};
const frames = () => {
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  return q ? q.totalVideoFrames : null;
};
// Waits until a frame at or after `t` is on screen.
const presented = (t) => new Promise((resolve) => {
  if (!v.requestVideoFrameCallback) return resolve(v.currentTime);
  const check = (_now, meta) => {
    if (meta.mediaTime >= t - 0.05 || v.ended) return resolve(meta.mediaTime);
    v.requestVideoFrameCallback(check);
  };
  v.requestVideoFrameCallback(check);
  setTimeout(() => resolve(v.currentTime), stepMs);
});
const step = (name, target) => {
  r.steps.push({step: name, target: target, reached: v.currentTime, pixel: sample(), frames: frames()});
};
const loadPoster = () => new Promise((resolve) => {
  if (!posterSrc) return resolve(null);
  const img = new Image();
  img.onload = () => resolve({width: img.naturalWidth, height: img.naturalHeight, error: null});
  img.onerror = () => resolve({width: 0, height: 0, error: 'the poster did not load'});
  img.src = posterSrc;
});
(async () => {
  try {
    v.src = src;
    await until(() => v.readyState >= 1, 'the metadata');
    r.videoWidth = v.videoWidth;
    r.videoHeight = v.videoHeight;
    r.duration = v.duration;
    await v.play();
    await until(() => v.currentTime > 0.5, 'playback past 0.5 s');
    step('play', 0.5);
    const d = v.duration;
    const seeks = [['seek 37 %', 0.37 * d], ['seek 71 %', 0.71 * d], ['seek last second', Math.max(0, d - 1)]];
    for (const [name, target] of seeks) {
      v.currentTime = target;
      await until(() => !v.seeking, `the ${name} (to ${target.toFixed(3)} s) to complete`);
      // Decoding resumes at the keyframe before the target; a frame that
      // cannot be decoded from there shows here as a MediaError.
      await presented(target);
      await until(() => v.ended || v.currentTime >= Math.min(target + 0.3, d - 0.05),
                  `playback after the ${name}`);
      step(name, target);
    }
    await until(() => v.ended, 'the end of playback');
    r.ended = true;
    r.currentTime = v.currentTime;
    r.frames = frames();
  } catch (e) {
    r.error = r.error || String(e.message || e);
  }
  r.poster = await loadPoster();
  done(r);
})();
""".replace("@UNTIL@", UNTIL)


# The HLS scenario: hls.js is loaded into the page first (its <script> is
# added by main()).
SCENARIO_HLS = r"""
const [src, stepMs, done] = arguments;
const r = {levels: null, fragLevels: [], error: null, ended: false};
const v = document.createElement('video');
v.muted = true;
v.playsInline = true;
document.body.appendChild(v);
const fragLevels = new Set();
@UNTIL@
v.addEventListener('error', () => {
  const e = v.error;
  r.error = e ? `MediaError ${e.code}: ${e.message}` : 'MediaError (no details)';
});
(async () => {
  try {
    if (!window.Hls || !Hls.isSupported()) throw new Error('hls.js is not supported here');
    const hls = new Hls({startLevel: 0, capLevelToPlayerSize: false, enableWorker: false});
    hls.on(Hls.Events.MANIFEST_PARSED, (_e, d) => {
      r.levels = d.levels.map(l => ({width: l.width, height: l.height, bitrate: l.bitrate,
                                     codecs: l.videoCodec || l.codecSet || null}));
    });
    hls.on(Hls.Events.FRAG_LOADED, (_e, d) => fragLevels.add(d.frag.level));
    hls.on(Hls.Events.ERROR, (_e, d) => {
      if (d.fatal) r.error = `hls.js fatal ${d.type}: ${d.details}`;
    });
    hls.loadSource(src);
    hls.attachMedia(v);
    await until(() => r.levels !== null, 'the master playlist');
    await until(() => v.readyState >= 1, 'the metadata');
    await v.play();
    await until(() => v.currentTime > 1, 'playback past 1 s');
    const top = r.levels.length - 1;
    hls.nextLevel = top;
    await until(() => fragLevels.has(top), `a fragment of level ${top}`);
    await until(() => v.ended, 'the end of playback');
    r.ended = true;
    r.duration = v.duration;
    r.currentTime = v.currentTime;
  } catch (e) {
    r.error = r.error || String(e.message || e);
  }
  r.fragLevels = Array.from(fragLevels).sort((a, b) => a - b);
  done(r);
})();
""".replace("@UNTIL@", UNTIL)


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves one directory with byte ranges, as S3 serves objects, plus the
    test page at /__page.html."""

    def log_message(self, format, *args):  # noqa: A002 (the stdlib's name)
        pass

    def end_headers(self):
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        if self.path.startswith("/__page.html"):
            body = PAGE.encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        header = self.headers.get("Range")
        status = HTTPStatus.OK
        if header:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                return
            if m.group(1) == "":
                start = max(0, size - int(m.group(2)))
            else:
                start = int(m.group(1))
                if m.group(2) != "":
                    end = min(end, int(m.group(2)))
            if start >= size or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(length))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            left = length
            try:
                while left > 0:
                    chunk = f.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the player cancelled the request, as it does when it seeks


def serve(directory):
    handler = lambda *a, **kw: RangeHandler(*a, directory=directory, **kw)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def located(value, base, served):
    """A URL for the page: an http(s) URL as is, a local file copied into the
    served directory."""
    if value is None:
        return None
    if re.match(r"^https?://", value):
        return value
    name = os.path.basename(value)
    shutil.copyfile(value, os.path.join(served, name))
    return f"{base}/{urllib.parse.quote(name)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video")
    ap.add_argument("--hls", help="a directory with master.m3u8, or a master playlist's URL")
    ap.add_argument("--hls-js", help="hls.min.js (scripts/install-deps.sh fetches it)")
    ap.add_argument("--poster")
    ap.add_argument("--pixel", help="X,Y of a pixel to read at every step")
    args = ap.parse_args()
    if bool(args.video) == bool(args.hls) or (args.hls and not args.hls_js):
        ap.error("give --video, or --hls with --hls-js")

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        print(f"browser.py: selenium is missing ({e}): run scripts/install-deps.sh", file=sys.stderr)
        return 2
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            print(f"browser.py: {tool} is missing: run scripts/install-deps.sh", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="vidworker-browser-") as tmp:
        served = os.path.join(tmp, "www")
        os.mkdir(served)
        server = serve(served)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        if args.hls:
            shutil.copyfile(args.hls_js, os.path.join(served, "hls.min.js"))
            if re.match(r"^https?://", args.hls):
                master = args.hls
            else:
                shutil.copytree(args.hls, os.path.join(served, "hls"))
                master = f"{base}/hls/master.m3u8"
        else:
            video = located(args.video, base, served)
        poster = located(args.poster, base, served)
        pixel = [int(p) for p in args.pixel.split(",")] if args.pixel else None

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        # Root in a sandbox-less VM: no sandbox, no GPU. Without the
        # background-networking flags Chromium keeps trying hosts this
        # closed network refuses.
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--mute-audio",
            f"--user-data-dir={os.path.join(tmp, 'profile')}",
        ):
            options.add_argument(flag)
        # The driver is Debian's, given by path: Selenium Manager would try
        # to download one.
        service = Service(executable_path=CHROMEDRIVER, log_output=os.path.join(tmp, "chromedriver.log"))
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_script_timeout(STEP_MS * 12 / 1000)
            driver.get(f"{base}/__page.html")
            if args.hls:
                driver.execute_async_script(
                    "const done = arguments[0]; const s = document.createElement('script');"
                    "s.src = '/hls.min.js'; s.onload = () => done(true); s.onerror = () => done(false);"
                    "document.head.appendChild(s);"
                )
                result = driver.execute_async_script(SCENARIO_HLS, master, STEP_MS)
            else:
                result = driver.execute_async_script(SCENARIO, video, poster, pixel, STEP_MS)
        finally:
            driver.quit()
            server.shutdown()
    result["video"] = args.video or args.hls
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Runs clippy and decides what fails the build.

A new Rust release brings new lints; CI must not break on the morning it
lands. So only these fail:
  - rustc's own warnings (unused code, deprecated calls, ...) and errors;
  - clippy's `correctness` and `suspicious` groups (denied on the command
    line, so they arrive as errors).
Every other clippy lint (style, complexity, perf, the workspace's own
`[workspace.lints.clippy]` warnings) is printed and counted, not fatal.

    scripts/lint.py [extra cargo clippy arguments]
"""

import json
import subprocess
import sys

CMD = [
    "cargo", "clippy", "--workspace", "--all-targets", "--locked",
    "--message-format=json-diagnostic-rendered-ansi", *sys.argv[1:],
    "--", "-D", "clippy::correctness", "-D", "clippy::suspicious",
]


def fatal(message: dict) -> bool:
    if message["level"] == "error":
        return True
    if message["level"] != "warning":
        return False
    code = (message.get("code") or {}).get("code") or ""
    return not code.startswith("clippy::")


def main() -> int:
    proc = subprocess.Popen(CMD, stdout=subprocess.PIPE, text=True)
    seen: set[str] = set()
    failed = warned = 0
    for line in proc.stdout:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if item.get("reason") != "compiler-message":
            continue
        message = item["message"]
        rendered = message.get("rendered") or message["message"]
        # A library's warning comes again with its test target: once is enough.
        if rendered in seen or message["level"] not in ("warning", "error"):
            continue
        seen.add(rendered)
        sys.stdout.write(rendered)
        if fatal(message):
            failed += 1
        else:
            warned += 1
    rc = proc.wait()
    print(f"lint: {failed} failing, {warned} advisory (clippy style/complexity/perf/workspace lints)")
    if rc != 0 or failed:
        print("lint: FAILED (rustc warnings, clippy::correctness and clippy::suspicious fail the build)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

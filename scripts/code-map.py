#!/usr/bin/env python3
"""Checks the house rules that keep the code navigable (CONTRIBUTING.md), and
prints the map they are checked on:

1. No import cycle between the modules of a crate, at any level: for every
   module, the graph among its child modules (a reference from anywhere
   inside child A to anything inside child B is an edge A -> B) has no
   cycle. Shared types go in a leaf module instead (geom.rs, failure.rs).
2. No source file in crates/*/src over 700 lines.
3. No function over 80 lines, in src and in tests.
4. `unsafe` only in crates/processor/src/ffi.rs and the AVIO core of
   crates/processor/src/input.rs.

References are read from the code with comments and string literals
removed: `use` trees (`use crate::{a::b, c}` is two references) and paths
in expressions (`crate::x::f()`, `super::x`, `self::x`). A path resolves to
the longest module it names; an item of a parent module (`super::Runner`)
is not an edge between siblings.

    scripts/code-map.py            # the checks; exit status 1 on a violation
    scripts/code-map.py --map      # also every module's dependencies
    scripts/code-map.py --stats    # also function length statistics

Standard library only; runs on Debian 12's python3 (3.11).
"""

import os
import re
import statistics
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FILE_LINES = 700
MAX_FN_LINES = 80
UNSAFE_ALLOWED = {"crates/processor/src/ffi.rs", "crates/processor/src/input.rs"}


def strip(text):
    """The code with comments, string and char literals blanked out (lines
    kept, so line numbers stay right)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"\w", text[i - 1:i] or " "):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:i + 4])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(code, open_at):
    """The index just past the brace that closes the one at `open_at`."""
    depth = 0
    for k in range(open_at, len(code)):
        if code[k] == "{":
            depth += 1
        elif code[k] == "}":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(code)


def without_test_modules(code):
    """`#[cfg(test)] mod x { ... }` removed: tests may reach anywhere."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            return code
        end = matching_brace(code, m.end() - 1)
        code = code[:m.start()] + re.sub(r"[^\n]", " ", code[m.start():end]) + code[end:]


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [re.sub(r"\bas\w+$", "", tree)]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [p for part in parts if part for p in expand_use(prefix + part)]


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path (tuple) -> file
        for dirpath, _, files in os.walk(src):
            for f in files:
                if f.endswith(".rs"):
                    self.files[self.module_of(os.path.join(dirpath, f))] = os.path.join(dirpath, f)
        self.modules = set(self.files)

    def module_of(self, path):
        rel = os.path.relpath(path, self.src)[:-3].split(os.sep)
        if rel[-1] in ("mod", "lib", "main"):
            rel = rel[:-1]
        return tuple(rel)

    def resolve(self, segments):
        """The longest module a path names."""
        best = ()
        for k in range(1, len(segments) + 1):
            if tuple(segments[:k]) in self.modules:
                best = tuple(segments[:k])
        return best

    def references(self, me, code):
        is_dir_module = os.path.basename(self.files[me]) in ("mod.rs", "lib.rs", "main.rs")
        paths = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            paths += expand_use(m.group(1))
        paths += [m.group(0) for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", code)]
        for p in paths:
            segs = [s for s in p.split("::") if s]
            if not segs:
                continue
            if segs[0] == "crate":
                target = list(segs[1:])
            elif segs[0] in ("super", "self"):
                base = list(me)
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
                if segs and segs[0] == "self":
                    segs = segs[1:]
                target = base + segs
            else:
                continue
            yield self.resolve(target)
        # `mod x;` in a module file makes x a child, not a dependency.
        del is_dir_module


def check_crate(name, src, show_map):
    crate = Crate(src)
    edges = defaultdict(lambda: defaultdict(set))  # parent -> child -> {children}
    for me, path in sorted(crate.files.items()):
        code = without_test_modules(strip(open(path).read()))
        for target in crate.references(me, code):
            k = 0
            while k < min(len(me), len(target)) and me[k] == target[k]:
                k += 1
            if k == len(me) or k == len(target):
                continue  # an ancestor or a descendant: not a sibling edge
            parent = me[:k]
            edges[parent][me[k]].add(target[k])
    problems = []
    for parent, graph in sorted(edges.items()):
        label = "::".join((name,) + parent)
        if show_map:
            print(f"  {label}")
            for a in sorted(graph):
                print(f"    {a} -> {', '.join(sorted(graph[a]))}")
        for cycle in cycles(graph):
            problems.append(f"{label}: import cycle between {{{', '.join(cycle)}}}")
    return problems


def cycles(graph):
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def functions(code):
    """(name, first line, lines) of every fn with a body."""
    for m in re.finditer(r"\bfn\s+(\w+)[^;{]*\{", code):
        end = matching_brace(code, m.end() - 1)
        first = code.count("\n", 0, m.start()) + 1
        last = code.count("\n", 0, end) + 1
        yield m.group(1), first, last - first + 1


def main():
    show_map, show_stats = "--map" in sys.argv, "--stats" in sys.argv
    problems, lengths, files = [], [], 0
    crates = sorted(d for d in os.listdir(os.path.join(ROOT, "crates")) if os.path.isdir(os.path.join(ROOT, "crates", d, "src")))
    if show_map:
        print("module dependencies (between siblings):")
    for name in crates:
        problems += check_crate(name, os.path.join(ROOT, "crates", name, "src"), show_map)
    roots = [os.path.join(ROOT, "crates", c, sub) for c in crates for sub in ("src", "tests", "benches")]
    roots.append(os.path.join(ROOT, "benches"))
    for base in roots:
        for dirpath, _, names in os.walk(base):
            for f in sorted(names):
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                text = open(path).read()
                code = strip(text)
                files += 1
                n_lines = text.count("\n")
                if "/src/" in rel and rel.startswith("crates/") and n_lines > MAX_FILE_LINES:
                    problems.append(f"{rel}: {n_lines} lines, more than {MAX_FILE_LINES}")
                for fname, line, length in functions(code):
                    lengths.append(length)
                    if length > MAX_FN_LINES:
                        problems.append(f"{rel}:{line}: fn {fname} is {length} lines, more than {MAX_FN_LINES}")
                if re.search(r"\bunsafe\b", code) and rel not in UNSAFE_ALLOWED:
                    line = code[:re.search(r"\bunsafe\b", code).start()].count("\n") + 1
                    problems.append(f"{rel}:{line}: unsafe outside ffi.rs and input.rs's AVIO core")
    print(f"{files} files, {len(lengths)} functions: median {statistics.median(lengths):.0f} lines, "
          f"mean {statistics.mean(lengths):.1f}, longest {max(lengths)}")
    if show_stats:
        for limit in (10, 20, 40, 60, 80):
            share = sum(1 for n in lengths if n <= limit) / len(lengths)
            print(f"  {share:6.1%} of functions within {limit} lines")
    for p in problems:
        print(f"error: {p}")
    if problems:
        print(f"{len(problems)} problem(s); see CONTRIBUTING.md")
        return 1
    print("no import cycle, no file over 700 lines, no function over 80 lines, unsafe only in ffi.rs and input.rs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

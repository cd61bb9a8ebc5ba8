#!/usr/bin/env python3
"""Layer compression side by side, in one run, on real closures.

Part 1, encoders alone: each closure is written once as one tar (the bytes every
contender reads), then compressed by nix-layer's encoders (the `compress` example of
crates/blob: the old zlib-rs level 6, the libdeflate members at several levels and
thread counts, zstd) and by the standard tools (`pigz -p2`, `zstd -T2`, `igzip`).
Reported: MB/s of uncompressed input (wall clock), ratio, CPU seconds (user+sys) and
peak memory, all from /usr/bin/time.

Part 2, whole builds: `nix-layer build --format oci` with the old encoder (the hidden
`gzip-zlib`) and the new default gzip, best of --runs, plus a check that `--jobs 1`
and `--jobs 2` give the same image.

Part 3, the first push: `nix-layer push` of the closure to a local registry (Debian's
docker-registry, a fresh one for every push, so no blob is already there), old encoder
against new, best of --runs, with the bytes uploaded.

    cargo build --release -p nix-layer -p nix-layer-blob --example compress
    benches/compress.py [--corpus /var/tmp/nix-layer-corpus] [--profiles devcontainer,tools,xl]

Needs pigz, zstd and isal (igzip) from apt, and the corpus (benches/corpus/build.py,
built when missing). On a shared machine, CPU seconds are the steadier measure: wall
clock includes waiting for other processes.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from common import ensure_corpus, timed_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def timed(cmd, stdout_path=None):
    """A shell pipeline's (wall s, cpu s, peak MiB), its output to `stdout_path` or dropped."""
    return timed_cpu(["sh", "-c", f"{cmd} > {stdout_path or '/dev/null'}"])


def best(n, fn):
    runs = [fn() for _ in range(n)]
    return min(runs, key=lambda r: r[1])


def encoders(compress):
    c = compress
    return [
        ("old: zlib-rs 6 (gzip-zlib)", f"{c} gzip-zlib 1"),
        ("new: libdeflate 5, 1 thread", f"{c} gzip 1"),
        ("new: libdeflate 5, 2 threads (default)", f"{c} gzip 2"),
        ("libdeflate 6, 2 threads", f"{c} gzip:6 2"),
        ("libdeflate 4, 2 threads", f"{c} gzip:4 2"),
        ("libdeflate 9, 2 threads", f"{c} gzip:9 2"),
        ("zstd 3 (nix-layer, 1 thread)", f"{c} zstd 1"),
        ("pigz -6 -p2", "pigz -6 -p2 -c"),
        ("igzip -3 -T2 (ISA-L)", "igzip -3 -T 2 -c"),
        ("igzip -1 -T2 (ISA-L)", "igzip -1 -T 2 -c"),
        ("zstd -3 -T2", "zstd -3 -T2 -q -c"),
    ]


def part1(profile, graph, tmp, compress, runs):
    paths = [n["path"] for n in json.load(open(graph))]
    plist = os.path.join(tmp, "paths")
    with open(plist, "w") as f:
        f.write("\n".join(paths))
    tar = os.path.join(tmp, f"{profile}.tar")
    subprocess.run(f"tar -cf {tar} -T {plist} 2>/dev/null", shell=True, check=True)
    size = os.path.getsize(tar)
    subprocess.run(f"cat {tar} > /dev/null", shell=True, check=True)
    rows = []
    out = os.path.join(tmp, "out")
    for name, cmd in encoders(compress):
        if shutil.which(cmd.split()[0]) is None:
            rows.append({"profile": profile, "encoder": name, "missing": cmd.split()[0]})
            continue
        wall, cpu, peak = best(runs, lambda: timed(f"{cmd} < {tar}", out))
        packed = os.path.getsize(out)
        rows.append({"profile": profile, "encoder": name, "MB": round(size / 1e6), "MBps": round(size / 1e6 / wall),
                     "ratio": round(packed / size, 4), "stored_MB": round(packed / 1e6, 1),
                     "cpu_s": round(cpu, 2), "MB_per_cpu_s": round(size / 1e6 / cpu), "wall_s": round(wall, 2),
                     "peak_MiB": round(peak, 1)})
    os.remove(tar)
    os.remove(out)
    return rows


def oci_blobs(layout):
    d = os.path.join(layout, "blobs", "sha256")
    return sum(os.path.getsize(os.path.join(d, b)) for b in os.listdir(d))


def part2(profile, graph, tmp, binary, runs):
    rows = []
    layouts = {}
    for name, comp, jobs in [("old gzip (zlib-rs 6)", "gzip-zlib", "2"), ("new gzip (default, level 5)", "gzip", "2"),
                             ("new gzip, level 6", "gzip:6", "2"),
                             ("new gzip, level 4", "gzip:4", "2"),
                             ("new gzip, --jobs 1", "gzip", "1"), ("zstd", "zstd", "2")]:
        out = os.path.join(tmp, f"oci-{comp}-{jobs}")

        def build():
            shutil.rmtree(out, ignore_errors=True)
            return timed(f"{binary} build --graph {graph} --name bench:1 --format oci --compression {comp} "
                         f"--jobs {jobs} -o {out} --quiet")
        wall, cpu, peak = best(runs, build)
        layouts[(comp, jobs)] = out
        rows.append({"profile": profile, "build": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "peak_MiB": round(peak, 1), "stored_MB": round(oci_blobs(out) / 1e6, 1)})
    same = open(os.path.join(layouts[("gzip", "1")], "index.json")).read() == \
        open(os.path.join(layouts[("gzip", "2")], "index.json")).read()
    old, new = rows[0], rows[1]
    summary = {"profile": profile, "speedup_wall": round(old["wall_s"] / new["wall_s"], 2),
               "speedup_cpu": round(old["cpu_s"] / new["cpu_s"], 2),
               "stored_vs_old": round(new["stored_MB"] / old["stored_MB"], 4), "jobs_1_and_2_same_image": same}
    for out in layouts.values():
        shutil.rmtree(out, ignore_errors=True)
    return rows, summary


def part3(profile, graph, tmp, binary, runs):
    """First pushes to a fresh registry each time, interleaved old/new."""
    from push import Registry  # the same registry launcher as benches/push.py

    results = {}
    for n in range(runs):
        for name, comp in [("old gzip (zlib-rs 6)", "gzip-zlib"), ("new gzip (default, level 5)", "gzip")]:
            work = os.path.join(tmp, f"push-{comp}-{n}")
            os.makedirs(work)
            reg = Registry(work)
            try:
                env = dict(os.environ, XDG_CACHE_HOME=os.path.join(work, "cache"))
                t = time.perf_counter()
                p = subprocess.run([binary, "push", f"{reg.host()}/bench/{profile}:1", "--graph", graph,
                                    "--plain-http", "--compression", comp, "--verbose"],
                                   check=True, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - t
            finally:
                reg.stop()
                shutil.rmtree(work, ignore_errors=True)
            m = re.search(r"(\d+) blobs uploaded \((\d+) bytes\)", p.stderr)
            if not m:
                sys.exit(p.stderr)
            if name not in results or wall < results[name][0]:
                results[name] = (wall, int(m.group(2)))
    rows = [{"profile": profile, "push": name, "wall_s": round(w, 2), "uploaded_MB": round(b / 1e6, 1)}
            for name, (w, b) in results.items()]
    rows.append({"profile": profile, "push": "speed-up", "wall_s": round(rows[0]["wall_s"] / rows[1]["wall_s"], 2)})
    return rows


def table(rows):
    keys = [k for k in rows[0]] if rows else []
    for r in rows:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/var/tmp/nix-layer-corpus")
    ap.add_argument("--profiles", default="devcontainer,tools,xl")
    ap.add_argument("--bin", default=os.path.join(TARGET, "release", "nix-layer"))
    ap.add_argument("--compress", default=os.path.join(TARGET, "release", "examples", "compress"))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--skip-builds", action="store_true", help="no part 2")
    ap.add_argument("--skip-encoders", action="store_true", help="no part 1")
    ap.add_argument("--push", action="store_true", help="part 3 too (needs docker-registry)")
    a = ap.parse_args()
    profiles = a.profiles.split(",")
    for tool in ([] if a.skip_encoders else [a.compress]) + ([] if a.skip_builds and not a.push else [a.bin]):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} is missing: cargo build --release -p nix-layer -p nix-layer-blob --example compress")
    ensure_corpus(a.corpus, profiles)
    enc, builds, summaries, pushes = [], [], [], []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for p in profiles:
            graph = f"{a.corpus}/{p}-v1.closure-graph.json"
            if not a.skip_encoders:
                enc += part1(p, graph, tmp, a.compress, a.runs)
                print(table(enc), file=sys.stderr)
            if not a.skip_builds:
                rows, summary = part2(p, graph, tmp, a.bin, a.runs)
                builds += rows
                summaries.append(summary)
            if a.push:
                pushes += part3(p, graph, tmp, a.bin, a.runs)
    if enc:
        print("## Encoders alone\n\n" + table(enc) + "\n")
    if builds:
        print("## `nix-layer build --format oci`\n\n" + table(builds) + "\n\n" + table(summaries) + "\n")
    if pushes:
        print("## First push to a local registry\n\n" + table(pushes))


if __name__ == "__main__":
    main()

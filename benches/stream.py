#!/usr/bin/env python3
"""`-o -` against `-o FILE`: what streaming a docker-archive costs, in one run on the corpus.

For each profile of the corpus (benches/corpus/build.py; built by benches/bench.py when
missing), on the same closure and page cache warm, runs interleaved and keeps each one's
best of --runs:

  * `file_s`: `nix-layer build -o img.tar` (the slot writer: threads fill one file);
  * `stream_s`: `nix-layer build -o - | cat > /dev/null` (a pipe to a reader, as
    `| docker load` is), and `stream_devnull_s`: `-o - > /dev/null` (no pipe);
  * `stream_over_file`: stream_s / file_s, the figure the README promises (at most 1.1);
  * `*_peak_MiB`: peak RSS of nix-layer itself (file, and stream to /dev/null);
  * with --before BIN (another nix-layer build, such as one from before the single-pass
    stream): its stream_s and ratio, measured in the same rounds.

Both outputs are checked to be byte-identical once per profile.

    benches/stream.py [--corpus /var/tmp/nix-layer-corpus] [--runs 5] [--before BIN]
                      [--profiles runtime,devcontainer,xl]
"""
import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile

from common import ensure_corpus, timed_rss as timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "nix-layer")


def measure(profile, graph, tmp, runs, before):
    paths = [n["path"] for n in json.load(open(graph))]
    mb = sum(n.get("narSize", 0) for n in json.load(open(graph))) / 1e6
    # Warm the page cache so every contender reads from memory.
    plist = os.path.join(tmp, "paths")
    with open(plist, "w") as f:
        f.write("\n".join(paths))
    subprocess.run(f"tar -cf - -T {plist} > /dev/null", shell=True, check=True)
    common = ["build", "--graph", graph, "--name", "bench:1", "--quiet"]
    img = os.path.join(tmp, "img.tar")

    def stream_cmd(binary, sink):
        return " ".join([binary, *common, "-o", "-"]) + sink

    # Same bytes either way (checked once, outside the timings).
    subprocess.run([BIN, *common, "-o", img], check=True)
    streamed = os.path.join(tmp, "streamed.tar")
    subprocess.run(stream_cmd(BIN, f" > {streamed}"), shell=True, check=True)
    identical = filecmp.cmp(img, streamed, shallow=False)
    os.remove(streamed)

    file_runs, pipe_runs, null_runs, before_runs = [], [], [], []
    for _ in range(runs):
        # A new file each time: the rename of a build replaces the old one.
        file_runs.append(timed([BIN, *common, "-o", img]))
        pipe_runs.append(timed(stream_cmd(BIN, " | cat > /dev/null"), shell=True))
        null_runs.append(timed([BIN, *common, "-o", "-"]))
        if before:
            before_runs.append(timed(stream_cmd(before, " | cat > /dev/null"), shell=True))
    best = lambda rs: min(rs, key=lambda r: r[0])
    f, p, n = best(file_runs), best(pipe_runs), best(null_runs)
    row = {
        "profile": profile, "MB": round(mb, 1),
        "file_s": round(f[0], 3), "stream_s": round(p[0], 3), "stream_devnull_s": round(n[0], 3),
        "stream_over_file": round(p[0] / f[0], 2), "devnull_over_file": round(n[0] / f[0], 2),
        "file_peak_MiB": round(f[1], 1), "stream_peak_MiB": round(n[1], 1),
        "bytes_identical": identical,
    }
    if before:
        b = best(before_runs)
        row["before_stream_s"] = round(b[0], 3)
        row["before_over_file"] = round(b[0] / f[0], 2)
    return row


def table(rows):
    keys = list(rows[0].keys())
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/var/tmp/nix-layer-corpus")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", help="another nix-layer binary whose stream is measured beside")
    ap.add_argument("--profiles", default="runtime,devcontainer,xl")
    args = ap.parse_args()
    if not os.access(BIN, os.X_OK):
        raise SystemExit(f"{BIN} missing: cargo build --release -p nix-layer")
    profiles = args.profiles.split(",")
    ensure_corpus(args.corpus, profiles)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nix-layer-stream-bench-") as tmp:
        for profile in profiles:
            graph = f"{args.corpus}/{profile}-v1.closure-graph.json"
            rows.append(measure(profile, graph, tmp, args.runs, args.before))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"## `-o -` against `-o FILE` (best of {args.runs}, interleaved)\n")
    table(rows)


if __name__ == "__main__":
    main()

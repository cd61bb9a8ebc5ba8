#!/usr/bin/env python3
"""nix-layer benchmarks, run by hand (not in CI).

Builds the corpus of real Nix closures (benches/corpus/build.py: Debian
packages as store paths; needs root, nix-bin, sandbox = false) if it is not
there, then reports, in one run on the same paths:

  * throughput of `nix-layer build` (docker-archive, cold, no cache): wall
    time, MB/s, files/s, peak RSS — next to two floors measured now:
    `tar -c PATHS | openssl dgst -sha256` and `cat` of every file;
  * with --baseline PATH (a copy of nixpkgs' stream_layered_image.py; never
    commit it): that script on the same closure and the same layer plan, and
    whether its store layers are byte-identical to ours (diff_ids);
  * a warm rebuild with a layer cache after one store path changed;
  * sharing, from `nix-layer plan` of every image: efficiency E of the family
    {runtime, devcontainer, xl}, the bytes pulled for xl onto devcontainer,
    and the bytes xl re-sends for each update of the corpus (OpenSSL, zlib,
    and two nothing was tuned on: curl, and xz, which is in no prior), and
    every package of xl updated in turn (`any_update_*`: re-sent over changed
    bytes summed over all of them, and the median update), all as ratios to
    the ideal, for popularity, auto, shared and shared with the
    family at max-layers 100, 50, 25 and 15. With the family, each image is
    planned with the family of its own variant (after a nixpkgs update the
    catalogue is regenerated with it);
  * the time `nix-layer plan` takes for xl with `shared`: alone, with the
    corpus family (3 members), and with a family of 11 sets cut from xl
    (base, devTools, python, pythonDev, … as the flake's catalogue has),
    as ratios to planning without a family.

Every speed figure is a ratio against a baseline measured in the same run.

    benches/bench.py [--corpus /var/tmp/nix-layer-corpus] [--baseline stream_layered_image.py]
                     [--only sharing]
"""
import argparse
import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
import time

from common import ensure_corpus, timed_rss as timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "nix-layer")
PROFILES = ["runtime", "devcontainer", "xl"]
# Update variants of the corpus (benches/corpus/build.py), by the library updated.
UPDATES = {"openssl": "v2", "zlib": "v2z", "curl": "v2c", "xz": "v2x"}


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def best(n, fn):
    runs = [fn() for _ in range(n)]
    return min(runs, key=lambda r: r[0])


def closure_stats(paths):
    files = size = 0
    for p in paths:
        if os.path.islink(p):
            continue
        for d, _, fs in os.walk(p):
            for f in fs:
                fp = os.path.join(d, f)
                st = os.lstat(fp)
                if not os.path.islink(fp):
                    files += 1
                    size += st.st_size
    return files, size


def nix_layer(*args, **kw):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True, **kw).stdout


def docker_archive_diff_ids(path):
    with tarfile.open(path) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        config = json.load(t.extractfile(manifest[0]["Config"]))
    return config["rootfs"]["diff_ids"]


def throughput(corpus, profile, tmp, baseline):
    graph = f"{corpus}/{profile}-v1.closure-graph.json"
    paths = [n["path"] for n in json.load(open(graph))]
    files, size = closure_stats(paths)
    plist = os.path.join(tmp, "paths")
    with open(plist, "w") as f:
        f.write("\n".join(paths))
    mb = size / 1e6
    # Warm the page cache once so every contender reads from memory.
    sh(f"tar -cf - -T {plist} > /dev/null")
    floor_tar = best(3, lambda: timed(f"tar -cf - -T {plist} | openssl dgst -sha256 >/dev/null", shell=True))
    floor_cat = best(3, lambda: timed(f"find $(cat {plist}) -type f -print0 | xargs -0 cat >/dev/null", shell=True))
    out = os.path.join(tmp, "img.tar")
    ours = best(3, lambda: timed([BIN, "build", "--graph", graph, "--name", "bench:1", "-o", out, "--quiet"]))
    ours1 = best(1, lambda: timed([BIN, "build", "--graph", graph, "--name", "bench:1", "-o", out, "--quiet", "--jobs", "1"]))
    row = {
        "profile": profile, "files": files, "MB": round(mb, 1),
        "nix_layer_s": round(ours[0], 3), "nix_layer_MBps": round(mb / ours[0]), "nix_layer_files_per_s": round(files / ours[0]),
        "nix_layer_peak_MiB": round(ours[1], 1), "nix_layer_jobs1_s": round(ours1[0], 3),
        "floor_tar_sha256_s": round(floor_tar[0], 3), "floor_cat_s": round(floor_cat[0], 3),
        "ratio_vs_tar_floor": round(ours[0] / floor_tar[0], 2),
    }
    if baseline:
        plan = json.loads(nix_layer("plan", "--graph", graph, "--json"))
        cust = os.path.join(tmp, "cust")
        os.makedirs(cust, exist_ok=True)
        with tarfile.open(os.path.join(cust, "layer.tar"), "w"):
            pass
        with open(os.path.join(cust, "layer.tar"), "rb") as f:
            open(os.path.join(cust, "checksum"), "w").write(hashlib.sha256(f.read()).hexdigest())
        conf = {"architecture": "amd64", "config": {}, "created": "1970-01-01T00:00:01Z", "mtime": "1970-01-01T00:00:01Z",
                "uid": 0, "gid": 0, "uname": "root", "gname": "root", "store_dir": "/nix/store", "from_image": None,
                "store_layers": plan, "customisation_layer": cust, "repo_tag": "bench:1"}
        conf_path = os.path.join(tmp, "conf.json")
        json.dump(conf, open(conf_path, "w"))
        base_out = os.path.join(tmp, "baseline.tar")
        with open(base_out, "wb") as f:
            base = timed(["python3", baseline, conf_path], stdout=f)
        row["baseline_s"] = round(base[0], 3)
        row["baseline_MBps"] = round(mb / base[0])
        row["speedup_vs_baseline"] = round(base[0] / ours[0], 1)
        ours_ids = docker_archive_diff_ids(out)[:-1]
        base_ids = docker_archive_diff_ids(base_out)[:-1]
        row["store_layers_byte_identical"] = ours_ids == base_ids
    return row


def compressed(corpus, profile, tmp):
    """OCI layouts with compressed layers, next to the same bytes through the
    standard tools on both cores (`tar | gzip -6` is one core; `zstd -T2` two)."""
    graph = f"{corpus}/{profile}-v1.closure-graph.json"
    paths = [n["path"] for n in json.load(open(graph))]
    plist = os.path.join(tmp, "paths-c")
    with open(plist, "w") as f:
        f.write("\n".join(paths))
    rows = []
    tools = {"gzip": "gzip -6", "zstd": "zstd -3 -T2 -q"}
    for c, tool in tools.items():
        out = os.path.join(tmp, f"oci-{c}")
        def ours():
            sh(f"rm -rf {out}")
            return timed([BIN, "build", "--graph", graph, "--name", "bench:1", "--format", "oci", "--compression", c, "-o", out, "--quiet"])
        t = best(2, ours)
        stored = sum(os.path.getsize(os.path.join(out, "blobs", "sha256", b)) for b in os.listdir(os.path.join(out, "blobs", "sha256")))
        ref = best(2, lambda: timed(f"tar -cf - -T {plist} 2>/dev/null | {tool} > {tmp}/ref.{c}", shell=True))
        rows.append({"profile": profile, "compression": c, "nix_layer_s": round(t[0], 2), "nix_layer_peak_MiB": round(t[1], 1),
                     "stored_MB": round(stored / 1e6, 1), "reference": f"tar -c, then {tool}", "reference_s": round(ref[0], 2),
                     "reference_MB": round(os.path.getsize(f"{tmp}/ref.{c}") / 1e6, 1), "speedup": round(ref[0] / t[0], 2)})
    return rows


def warm_rebuild(corpus, profile, tmp, strategy):
    """Cold build with a cache, then a rebuild after one new store path joins."""
    graph_path = f"{corpus}/{profile}-v1.closure-graph.json"
    graph = json.load(open(graph_path))
    referenced = {r for n in graph for r in n["references"] if r != n["path"]}
    root = next(n["path"] for n in graph if n["path"] not in referenced)
    app_dir = os.path.join(tmp, f"app-{time.time_ns()}")
    os.makedirs(app_dir)
    open(os.path.join(app_dir, "run"), "w").write(f"#!/bin/sh\nexec {root}/bin/bash \"$@\"\n")
    app = subprocess.run(["nix-store", "--add", app_dir], check=True, capture_output=True, text=True).stdout.strip()
    info = json.loads(subprocess.run(["nix", "path-info", "--json", app], check=True, capture_output=True, text=True).stdout)[0]
    graph2 = graph + [{"path": app, "narSize": info["narSize"], "narHash": info["narHash"], "references": [root]}]
    g2 = os.path.join(tmp, "graph2.json")
    json.dump(graph2, open(g2, "w"))
    cache = os.path.join(tmp, f"cache-{strategy}")
    common = ["--name", "bench:1", "--format", "oci", "--quiet", "--strategy", strategy, "--cache", cache]
    cold = timed([BIN, "build", "--graph", graph_path, *common, "-o", os.path.join(tmp, f"cold-{strategy}")])
    warm = timed([BIN, "build", "--graph", g2, *common, "-o", os.path.join(tmp, f"warm-{strategy}")])
    nocache = timed([BIN, "build", "--graph", graph_path, "--name", "bench:1", "--format", "oci", "--quiet", "--strategy", strategy, "-o", os.path.join(tmp, f"nocache-{strategy}")])
    return {"profile": profile, "strategy": strategy, "cold_s": round(nocache[0], 3), "cold_with_cache_fill_s": round(cold[0], 3),
            "warm_one_path_changed_s": round(warm[0], 3), "speedup": round(nocache[0] / warm[0], 1)}


def graph_sizes(corpus, name):
    return {n["path"]: n["narSize"] for n in json.load(open(f"{corpus}/{name}.closure-graph.json"))}


def planned_layers(corpus, name, strategy, max_layers, family):
    """The layers `nix-layer plan` makes of one corpus graph, as tuples of paths."""
    args = ["plan", "--graph", f"{corpus}/{name}.closure-graph.json", "--max-layers", str(max_layers), "--json"]
    if strategy == "shared+family":
        args += ["--strategy", "shared", "--family", *(f"{corpus}/{p}-{family}.closure-graph.json" for p in PROFILES)]
    else:
        args += ["--strategy", strategy]
    return [tuple(layer) for layer in json.loads(nix_layer(*args))]


def sharing(corpus, strategy, max_layers, size):
    """Ratios to the ideal (one layer per path); a layer is its ordered path list."""
    def plan(profile, variant):
        return planned_layers(corpus, f"{profile}-{variant}", strategy, max_layers, variant)

    def weight(layers):
        return sum(size[p] for layer in layers for p in layer)

    def pull(have, want):
        """Bytes of the layers of `want` that `have` lacks, over the bytes of its paths that `have` lacks."""
        held, paths = set(have), {p for layer in have for p in layer}
        return weight({l for l in want if l not in held}) / sum(size[p] for p in {p for l in want for p in l} - paths)

    images = [plan(p, "v1") for p in PROFILES]
    unique = sum(size[p] for p in {p for layers in images for layer in layers for p in layer})
    row = {"strategy": strategy, "max_layers": max_layers,
           "E": round(unique / weight({l for layers in images for l in layers}), 3),
           "pull_xl_onto_devcontainer": round(pull(images[1], images[2]), 2)}
    for library, variant in UPDATES.items():
        row[f"{library}_update_resend"] = round(pull(images[2], plan("xl", variant)), 2)
    row.update(any_update(images[2], f"{corpus}/xl-v1.closure-graph.json", size))
    return row


def any_update(layers, graph_path, size):
    """Every package of the image updated in turn, nothing tuned on: an update
    changes the package and everything that depends on it and re-sends every
    layer holding one of those (the layering as planned before the update).
    Re-sent bytes over changed bytes, summed over all updates, and the median
    update's ratio."""
    nodes = json.load(open(graph_path))
    users = {n["path"]: [] for n in nodes}
    for n in nodes:
        for r in n["references"]:
            if r != n["path"]:
                users[r].append(n["path"])
    layer_of = {p: i for i, layer in enumerate(layers) for p in layer}
    layer_bytes = [sum(size[p] for p in layer) for layer in layers]
    sent_total = changed_total = 0
    ratios = []
    for q in users:
        cone, todo = set(), [q]
        while todo:
            p = todo.pop()
            if p not in cone:
                cone.add(p)
                todo += users[p]
        changed = sum(size[p] for p in cone)
        sent = sum(layer_bytes[i] for i in {layer_of[p] for p in cone})
        sent_total, changed_total = sent_total + sent, changed_total + changed
        ratios.append(sent / changed)
    ratios.sort()
    return {"any_update_resend": round(sent_total / changed_total, 2), "any_update_median": round(ratios[len(ratios) // 2], 2)}


# Sets like the flake's catalogue, cut from xl: each is the runtime base plus
# the closure of the packages named (by name prefix).
ELEVEN = {"base": [], "devTools": ["git-2", "vim-9", "ripgrep", "fzf", "direnv", "bat-", "tmux", "less"],
          "nixTools": ["curl-7", "jq", "xz-utils"], "python": ["python3-3"],
          "pythonDev": ["python3-pip", "python3-setuptools"], "node": ["nodejs"], "go": ["make-4", "binutils-2"],
          "goDev": ["gcc-12-12"], "rust": ["libstdc++6"], "rustDev": ["g++-12-12", "build-essential"],
          "gnupg": ["gnupg-2", "dpkg-dev"]}


def eleven_sets(corpus, tmp):
    nodes = {n["path"]: n for n in json.load(open(f"{corpus}/xl-v1.closure-graph.json"))}
    base = {n["path"] for n in json.load(open(f"{corpus}/runtime-v1.closure-graph.json")) if n["path"] in nodes}
    files = []
    for name, prefixes in ELEVEN.items():
        todo = [p for p in nodes if any(p.split("-", 1)[1].startswith(x) for x in prefixes)]
        seen = set(base)
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo += nodes[p]["references"]
        files.append(os.path.join(tmp, f"{name}.closure-graph.json"))
        json.dump([nodes[p] for p in sorted(seen)], open(files[-1], "w"))
    return files


def plan_time(corpus):
    """Seconds to plan xl with `shared` (best of 3), without a family and with two."""
    graph = f"{corpus}/xl-v1.closure-graph.json"
    with tempfile.TemporaryDirectory() as tmp:
        families = {"none": [], "corpus (3 members)": [f"{corpus}/{p}-v1.closure-graph.json" for p in PROFILES],
                    "11 sets": eleven_sets(corpus, tmp)}
        rows = []
        for m in (100, 25, 15):
            def run(members):
                args = [BIN, "plan", "--graph", graph, "--max-layers", str(m), "--strategy", "shared"]
                return best(3, lambda: timed(args + (["--family", *members] if members else [])))[0]
            alone = run([])
            for name, members in families.items():
                t = run(members) if members else alone
                rows.append({"family": name, "max_layers": m, "plan_s": round(t, 3), "vs_no_family": round(t / alone, 1)})
        return rows


def table(rows):
    keys = list(rows[0].keys())
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/var/tmp/nix-layer-corpus")
    ap.add_argument("--baseline", help="path to a copy of nixpkgs' stream_layered_image.py")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--only", choices=["sharing"], help="only the sharing table (plans, no image writing)")
    args = ap.parse_args()
    os.environ.setdefault("NIX_CONFIG", "substituters =\nsandbox = false")
    ensure_corpus(args.corpus, PROFILES, ["v1", *UPDATES.values()])
    sh(f"cd {ROOT} && cargo build --release --locked -q -p nix-layer")
    if args.only != "sharing":
        speed(args)
    print("## Sharing (plans by `nix-layer plan`; ratios to the ideal; layer identity = ordered path list)\n")
    size = {}
    for name in [f"{p}-v1" for p in PROFILES] + [f"{p}-{v}" for p in PROFILES for v in UPDATES.values()]:
        size.update(graph_sizes(args.corpus, name))
    strategies = ("popularity", "auto", "shared", "shared+family")
    table([sharing(args.corpus, s, m, size) for m in (100, 50, 25, 15) for s in strategies])
    print("## Planning time (`nix-layer plan` of xl with `shared`, best of 3)\n")
    table(plan_time(args.corpus))


def speed(args):
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        print("## Cold build throughput (docker-archive, no cache, page cache warm)\n")
        table([throughput(args.corpus, p, tmp, args.baseline) for p in args.profiles.split(",")])
        print("## Compressed layers (OCI layout, cold, both cores)\n")
        table(compressed(args.corpus, "devcontainer", tmp))
        print("## Rebuild after one store path changed (OCI layout, layer cache)\n")
        table([warm_rebuild(args.corpus, "devcontainer", tmp, s) for s in ("shared", "popularity")])


if __name__ == "__main__":
    main()

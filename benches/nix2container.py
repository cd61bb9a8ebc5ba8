#!/usr/bin/env python3
"""nix-layer against nix2container + its patched skopeo, gzip OCI layout, one closure.

nix2container's path is two steps: `nix2container layers-from-reproducible-storepaths`
(plans layers and hashes every layer's uncompressed tar) plus `nix2container image`,
then `skopeo copy nix:image.json oci:DIR:latest` (writes the tars again, gzip by
default). Ours is one `nix-layer build --format oci`. Both get --max-layers 100 and the
popularity layering; runs are interleaved, each starts only once the 1-minute load
average is below --max-load. Reported per run: wall, CPU (user+sys, whole process
tree, from /usr/bin/time) and blob bytes; then the median of each.

The nix2container binaries are not in this repository: they are built by hand in a
throwaway Debian trixie root (--root) holding /build/bin/nix2container and
/build/bin/skopeo (skopeo 1.18 with the nix: transport, linked against trixie's
glibc, so both run inside that root). Commands run there through
`unshare -m` + `chroot`, with /proc, /dev, /nix and --work bound in.

    benches/nix2container.py --graph /var/tmp/nix-layer-corpus/tools-v1.closure-graph.json \\
        [--root /var/tmp/n2c-root] [--work /var/tmp/n2c/bench] [--runs 3]

The recipe (Debian's packages only; nothing here reaches the Go module proxy):

    debootstrap --variant=minbase trixie ROOT http://deb.debian.org/debian
    # in ROOT (chroot), with a deb-src line for trixie:
    apt-get install --no-install-recommends dpkg-dev golang-go golang-gonum-v1-gonum-dev \\
      golang-github-spf13-cobra-dev golang-github-sirupsen-logrus-dev \\
      golang-github-opencontainers-image-spec-dev golang-github-opencontainers-go-digest-dev \\
      golang-github-containers-image-dev
    apt-get build-dep skopeo && apt-get source skopeo
    # GOPATH=/build/gopath:/usr/share/gocode GO111MODULE=off GOPROXY=off, with in /build/gopath:
    #   containers/skopeo: skopeo 1.18's source;
    #   containers/image: Debian's copy (5.34.2) plus the nix: transport (nix/transport.go,
    #     registered in transports/alltransports), which nix2container patches in;
    #   nlewo/nix2container: its source, go.podman.io/image/v5 imports pointed at
    #     github.com/containers/image/v5, go.mod cut to its module line.
    go build -o /build/bin/nix2container .            # in nlewo/nix2container
    go build -tags "exclude_graphdriver_btrfs containers_image_openpgp" \\
      -o /build/bin/skopeo ./cmd/skopeo               # in containers/skopeo
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time

from common import timed_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def timed(argv):
    """(wall s, user+sys s) of argv's whole process tree."""
    return timed_cpu(argv)[:2]


def in_root(root, work, script):
    """argv running `script` with bash inside the trixie root, in a private mount namespace."""
    binds = " && ".join(f"mount --bind {s} {root}{s}" for s in ("/proc", "/dev", "/nix", work))
    inner = f"cd {shlex.quote(work)} && {script}"
    env = "/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8"
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"{binds} && exec chroot {root} {env} /bin/bash -c {shlex.quote(inner)}"]


def blob_bytes(layout):
    d = os.path.join(layout, "blobs", "sha256")
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def layer_count(layout):
    index = json.load(open(os.path.join(layout, "index.json")))
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.load(open(os.path.join(layout, "blobs", "sha256", digest)))
    return len(manifest["layers"]), sorted({l["mediaType"] for l in manifest["layers"]})


def wait_for_load(max_load, patience):
    deadline = time.time() + patience
    while os.getloadavg()[0] >= max_load:
        if time.time() > deadline:
            print(f"load still {os.getloadavg()[0]:.2f} after {patience}s; running anyway", file=sys.stderr)
            return
        time.sleep(10)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--graph", required=True)
    p.add_argument("--root", default="/var/tmp/n2c-root")
    p.add_argument("--work", default="/var/tmp/n2c/bench")
    p.add_argument("--nix-layer", default=os.path.join(TARGET, "release", "nix-layer"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-layers", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--max-load", type=float, default=1.0)
    p.add_argument("--load-patience", type=int, default=600, help="seconds to wait for low load")
    a = p.parse_args()
    for b in ("nix2container", "skopeo"):
        if not os.access(f"{a.root}/build/bin/{b}", os.X_OK):
            sys.exit(f"missing {a.root}/build/bin/{b} (see this script's docstring)")
    if not os.access(a.nix_layer, os.X_OK):
        sys.exit(f"missing {a.nix_layer}: cargo build --release -p nix-layer")

    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.makedirs(a.root + work, exist_ok=True)
    shutil.copy(a.graph, os.path.join(work, "graph.json"))
    with open(os.path.join(work, "config.json"), "w") as f:
        f.write("{}")

    n2c_plan = (f"/build/bin/nix2container layers-from-reproducible-storepaths layers.json graph.json "
                f"--max-layers {a.max_layers} && /build/bin/nix2container image image.json config.json layers.json")
    skopeo = "/build/bin/skopeo --insecure-policy copy -q nix:image.json oci:n2c:latest"
    ours = os.path.join(work, "ours")
    rows = {"n2c plan": [], "skopeo copy": [], "n2c total": [], "nix-layer": []}
    for i in range(a.runs):
        for tool in ("n2c", "nix-layer"):
            wait_for_load(a.max_load, a.load_patience)
            print(f"run {i + 1} {tool}: load {os.getloadavg()[0]:.2f} at start", flush=True)
            if tool == "n2c":
                shutil.rmtree(os.path.join(work, "n2c"), ignore_errors=True)
                for f in ("layers.json", "image.json"):
                    if os.path.exists(os.path.join(work, f)):
                        os.remove(os.path.join(work, f))
                w1, c1 = timed(in_root(a.root, work, n2c_plan))
                w2, c2 = timed(in_root(a.root, work, skopeo))
                size = blob_bytes(os.path.join(work, "n2c"))
                rows["n2c plan"].append((w1, c1, None))
                rows["skopeo copy"].append((w2, c2, size))
                rows["n2c total"].append((w1 + w2, c1 + c2, size))
            else:
                shutil.rmtree(ours, ignore_errors=True)
                w, c = timed([a.nix_layer, "build", "--graph", os.path.join(work, "graph.json"),
                              "--name", "bench:1", "--format", "oci", "-o", ours, "--jobs", str(a.jobs),
                              "--max-layers", str(a.max_layers)])
                rows["nix-layer"].append((w, c, blob_bytes(ours)))
            print(f"run {i + 1} {tool}: " + ", ".join(
                f"{k} {v[-1][0]:.2f}s wall {v[-1][1]:.2f}s cpu" for k, v in rows.items()
                if v and len(v) == i + 1 and (k.startswith("n2c") or k == "skopeo copy") == (tool == "n2c")),
                flush=True)

    for name, layout in (("nix2container", os.path.join(work, "n2c")), ("nix-layer", ours)):
        print(f"{name}: layers/media types {layer_count(layout)}")
    print(f"{'step':<12} {'wall s (median; runs)':<34} {'cpu s (median; runs)':<34} blob bytes")
    for k, v in rows.items():
        walls, cpus = [r[0] for r in v], [r[1] for r in v]
        size = v[-1][2]
        print(f"{k:<12} {statistics.median(walls):6.2f} ({', '.join(f'{x:.2f}' for x in walls)})".ljust(47)
              + f" {statistics.median(cpus):6.2f} ({', '.join(f'{x:.2f}' for x in cpus)})".ljust(35)
              + (f" {size}" if size else ""))


if __name__ == "__main__":
    main()

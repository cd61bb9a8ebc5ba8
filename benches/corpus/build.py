#!/usr/bin/env python3
"""Builds the benchmark corpus: real Nix closures made from Debian packages.

No nixpkgs is needed (none can be reached here): every installed Debian
package of a profile's closure becomes one store path named
`<package>-<version>` holding the package's real files, whose references are
its Depends (cycles, such as libc6 <-> libgcc-s1, are merged into one path).
The Nix expression is corpus.nix next to this script.

    benches/corpus/build.py OUT [--profiles runtime,devcontainer,xl,tools]

Needs root (it installs the profiles' packages with apt when missing and
reads every installed file), nix-bin, and Nix with sandbox = false (the
builders read the host's files). Writes, for every profile P and variant V,
`OUT/P-V.closure-graph.json` (exportReferencesGraph's format, sorted by path)
and the GC root `OUT/result-P-V`. Takes about 3 minutes on 2 cores the first
time (mostly copying 0.8 GB into the store), seconds once built.

Variants: v1 is the packages as installed. The others are updates. Debian's
versions are fixed on a machine, so an update is made the way Nix sees one:
the updated packages' paths get a new name (`+upd1` after the version) and
changed shared objects, and every path that depends on them gets a new hash
because its inputs changed.
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

RUNTIME = ["bash", "coreutils", "python3.11", "ca-certificates", "tzdata"]
DEVCONTAINER = RUNTIME + ["git", "curl", "jq", "ripgrep", "fd-find", "fzf", "bat", "sudo", "nodejs", "direnv"]
XL = DEVCONTAINER + ["build-essential", "python3-pip", "openssh-client", "gnupg", "vim", "less", "procps",
                     "unzip", "make", "pkg-config", "libssl-dev", "tmux", "man-db"]
# The size of the h-tools-v1 closure the compression issue measured (191 paths, 643 MB):
# xl without the C++ compiler, with the preprocessor, libc headers and dpkg-dev; nodejs
# (193 MB) dominates it, as one big path does in real tool images.
TOOLS = [p for p in XL if p != "build-essential"] + ["cpp-12", "libc6-dev", "dpkg-dev"]
PROFILES = {"runtime": RUNTIME, "devcontainer": DEVCONTAINER, "xl": XL, "tools": TOOLS}

# variant -> the Debian packages it updates.
VARIANTS = {
    "v1": [],
    "v2": ["libssl3", "openssl", "libssl-dev"],  # an OpenSSL security update
    "v2z": ["zlib1g"],  # a zlib change
    "v2c": ["libcurl4", "libcurl3-gnutls", "curl"],  # curl: in the planner's prior, never tuned on
    "v2x": ["liblzma5", "xz-utils"],  # xz: in no prior, never tuned on
}

# /bin, /lib, … are links into /usr on Debian 12 (usrmerge); dpkg still
# lists files under the old names.
ALIASES = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def run(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


def installed():
    fmt = "${Package}\t${Version}\t${db:Status-Abbrev}\t${Pre-Depends}, ${Depends}\t${Provides}\n"
    pkgs = {}
    for line in run("dpkg-query", "-W", "-f", fmt).splitlines():
        name, version, status, deps, provides = line.split("\t")
        if status.startswith("ii"):
            pkgs[name] = {"version": version, "deps": alternatives(deps),
                          "provides": [p.split()[0].split(":")[0] for p in provides.split(",") if p.strip()]}
    return pkgs


def alternatives(field):
    """`a (>= 1) | b, c:any` -> [[a, b], [c]]."""
    out = []
    for clause in field.split(","):
        alts = [re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", a).strip().split(":")[0] for a in clause.split("|")]
        alts = [a for a in alts if a]
        if alts:
            out.append(alts)
    return out


def closure(pkgs, roots):
    """Package -> the packages its Depends resolve to, over the roots' closure."""
    providers = {}
    for name in sorted(pkgs):
        for v in pkgs[name]["provides"]:
            providers.setdefault(v, name)
    edges, todo = {}, list(roots)
    while todo:
        n = todo.pop()
        if n in edges:
            continue
        if n not in pkgs:
            sys.exit(f"{n} is not installed")
        deps = set()
        for alts in pkgs[n]["deps"]:
            pick = next((a for a in alts if a in pkgs), None) or next((providers[a] for a in alts if a in providers), None)
            if pick and pick != n:
                deps.add(pick)
        edges[n] = sorted(deps)
        todo.extend(deps)
    return edges


def components(edges):
    """Strongly connected components (iterative Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            v, k = work.pop()
            if k == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on.add(v)
            if k < len(edges[v]):
                work.append((v, k + 1))
                w = edges[v][k]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            for w in edges[v]:
                if w in on:
                    low[v] = min(low[v], low[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def files_of(members):
    """The package's existing files, directories and links, usrmerge-canonical, sorted."""
    seen = set()
    for m in members:
        for p in run("dpkg", "-L", m).splitlines():
            if not p.startswith("/") or p == "/." or p in ALIASES:
                continue
            real = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
            if os.path.lexists(real):
                seen.add(real.lstrip("/"))
    return sorted(seen)


def store_name(members, version):
    name = "+".join(members) + "-" + version.split(":", 1)[-1]
    return re.sub(r"[^A-Za-z0-9+\-._?=]", "_", name)[:200]


def write_spec(out, pkgs):
    """OUT/spec.json: every node (package or cycle) with its deps and file list."""
    edges = closure(pkgs, sorted({r for roots in PROFILES.values() for r in roots}))
    node_of, nodes = {}, {}
    for comp in components(edges):
        # A cycle is named after the member most others depend on.
        comp.sort(key=lambda m: (-sum(m in edges[x] for x in edges), m))
        for m in comp:
            node_of[m] = comp[0]
        nodes[comp[0]] = {"members": comp, "version": pkgs[comp[0]]["version"]}
    os.makedirs(os.path.join(out, "lists"), exist_ok=True)
    for key, n in nodes.items():
        n["deps"] = sorted({node_of[d] for m in n["members"] for d in edges[m]} - {key})
        n["name"] = store_name(n["members"], n["version"])
        n["list"] = os.path.join(out, "lists", key + ".files")
        text = "\n".join(files_of(n["members"])) + "\n"
        if not os.path.exists(n["list"]) or open(n["list"]).read() != text:
            with open(n["list"] + ".tmp", "w") as f:
                f.write(text)
            os.rename(n["list"] + ".tmp", n["list"])
    spec = {"nodes": nodes, "profiles": {p: sorted({node_of[r] for r in roots}) for p, roots in PROFILES.items()}}
    path = os.path.join(out, "spec.json")
    with open(path + ".tmp", "w") as f:
        json.dump(spec, f, indent=1, sort_keys=True)
    os.rename(path + ".tmp", path)
    return path


def graph(result):
    """The closure of `result` in exportReferencesGraph's format, sorted by path."""
    infos = json.loads(run("nix", "path-info", "--json", "--recursive", result))
    nodes = [{"path": i["path"], "narHash": i["narHash"], "narSize": i["narSize"],
              "references": sorted(i.get("references", []))} for i in infos]
    return sorted(nodes, key=lambda n: n["path"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    os.environ["NIX_CONFIG"] = "substituters =\nsandbox = false\nbuild-users-group =\n" + os.environ.get("NIX_CONFIG", "")
    wanted = sorted({r for roots in PROFILES.values() for r in roots})
    pkgs = installed()
    missing = [p for p in wanted if p not in pkgs]
    if missing:
        # --no-upgrade: never change what the host already has.
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "--no-upgrade", *missing], check=True)
        pkgs = installed()
    spec = write_spec(out, pkgs)
    for variant in args.variants.split(","):
        for profile in args.profiles.split(","):
            link = os.path.join(out, f"result-{profile}-{variant}")
            run("nix-build", os.path.join(HERE, "corpus.nix"), "--argstr", "spec", spec, "--argstr", "profile", profile,
                "--argstr", "update", " ".join(VARIANTS[variant]), "-o", link, "-j", "4")
            target = os.path.join(out, f"{profile}-{variant}.closure-graph.json")
            with open(target + ".tmp", "w") as f:
                json.dump(graph(link), f, indent=1)
            os.rename(target + ".tmp", target)
            print(f"{profile}-{variant} {target}")


if __name__ == "__main__":
    main()

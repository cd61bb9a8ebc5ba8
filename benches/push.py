#!/usr/bin/env python3
"""Push benchmarks (by hand, not in CI): `nix-layer push` against a real registry on
127.0.0.1 (Debian's docker-registry), on the corpus of real closures
(benches/corpus/build.py; built if missing).

Reports, every figure from this one run:

  * first push of the devcontainer closure plus an app: time, bytes sent, requests;
  * the edit loop: the app changes (a new store path), rebuild and push, from a warm
    local layer cache, from an empty one on the same machine (the registry's layer index
    tells nix-layer what not to compress; its entries are checked against the local tars'
    diff_ids, the blobs were proven when this machine pushed them), and from a fresh
    machine (empty local cache, empty blob-info record: every blob the index names is
    downloaded, unpacked and hashed once: the cost of verification), against `nix-layer
    build --format oci` then `skopeo copy` of the layout, measured in the same run, and
    bytes sent against the changed layers' size;
    With `--verify-index exact` the fresh machine also compresses every proven blob again;
  * the OpenSSL update of the corpus (devcontainer v1 then v2): bytes and requests.

    benches/push.py [--corpus /var/tmp/nix-layer-corpus] [--baseline stream_layered_image.py]

With --baseline (a copy of nixpkgs' stream_layered_image.py; never commit it), the edit
loop is also timed as dockerTools does it: that script writes the docker-archive of the
same plan, then `skopeo copy` pushes it.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "nix-layer")
NIX = ["--option", "substituters", ""]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


class Registry:
    """docker-registry on a free port, its access log parsed for request counts."""

    def __init__(self, work):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.log = open(os.path.join(work, "registry.log"), "w+")
        conf = os.path.join(work, "registry.yml")
        with open(conf, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {work}/data\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", conf], stdout=self.log, stderr=self.log)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("docker-registry did not start")

    def host(self):
        return f"127.0.0.1:{self.port}"

    def requests(self):
        """Lines of the access log so far ("METHOD /path")."""
        self.log.flush()
        self.log.seek(0)
        return re.findall(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP', self.log.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def app_path(work, n):
    """A small new store path standing in for the application (about 2 MB)."""
    d = os.path.join(work, f"app{n}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "app.bin"), "wb") as f:
        f.write(os.urandom(2 << 20))
    path = subprocess.run(["nix-store", "--add", d] + NIX, check=True, capture_output=True, text=True).stdout.strip()
    h = subprocess.run(["nix-store", "-q", "--hash", path], check=True, capture_output=True, text=True).stdout.strip()
    size = int(subprocess.run(["nix-store", "-q", "--size", path], check=True, capture_output=True, text=True).stdout)
    return {"path": path, "narHash": h, "narSize": size, "references": []}


def graph_with(base_graph, app, work, name):
    with open(base_graph) as f:
        g = json.load(f)
    g = g + [app]
    out = os.path.join(work, name)
    with open(out, "w") as f:
        json.dump(g, f)
    return out


def push(graph, ref, machine, extra=()):
    """One push from `machine` (its user cache: the blob-info record)."""
    start = time.perf_counter()
    env = dict(os.environ, XDG_CACHE_HOME=machine)
    p = subprocess.run([BIN, "push", ref, "--graph", graph, "--plain-http", "--verbose", "--strategy", "shared"] + list(extra),
                       check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    m = re.search(r"(\d+) blobs uploaded \((\d+) bytes\), (\d+) mounted, (\d+) already there "
                  r"\((\d+) layers not even built; (\d+) blobs proven, (\d+) bytes\)", p.stderr)
    if not m:
        sys.exit(p.stderr)
    return wall, int(m.group(2)), int(m.group(1)), int(m.group(5)), int(m.group(6)), int(m.group(7))


def layout_then_skopeo(graph, ref, work, n):
    start = time.perf_counter()
    layout = os.path.join(work, f"layout{n}")
    sh([BIN, "build", "--graph", graph, "--name", "bench:1", "--format", "oci", "--strategy", "shared", "--quiet", "-o", layout])
    sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:bench:1", f"docker://{ref}"])
    return time.perf_counter() - start


def sli_then_skopeo(script, graph, ref, work):
    """The dockerTools way: stream_layered_image.py on nix-layer's plan, then skopeo."""
    start = time.perf_counter()
    plan = json.loads(subprocess.run([BIN, "plan", "--graph", graph, "--strategy", "shared", "--json"],
                                     check=True, capture_output=True, text=True).stdout)
    custom = os.path.join(work, "custom")
    os.makedirs(custom, exist_ok=True)
    empty = b"\0" * 10240
    with open(os.path.join(custom, "layer.tar"), "wb") as f:
        f.write(empty)
    import hashlib
    with open(os.path.join(custom, "checksum"), "w") as f:
        f.write(hashlib.sha256(empty).hexdigest())
    conf = {"created": "1970-01-01T00:00:01+00:00", "mtime": "1970-01-01T00:00:01+00:00", "uid": 0, "gid": 0,
            "uname": "root", "gname": "root", "store_dir": "/nix/store", "store_layers": plan["layers"] if isinstance(plan, dict) else plan,
            "customisation_layer": custom, "architecture": "amd64", "config": {}, "repo_tag": "bench:1"}
    conf_path = os.path.join(work, "sli.json")
    with open(conf_path, "w") as f:
        json.dump(conf, f)
    archive = os.path.join(work, "sli.tar")
    with open(archive, "wb") as out:
        sh([sys.executable, script, conf_path], stdout=out, stderr=subprocess.DEVNULL)
    sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{ref}"])
    os.remove(archive)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/var/tmp/nix-layer-corpus")
    ap.add_argument("--baseline", help="a copy of nixpkgs' stream_layered_image.py (never committed)")
    a = ap.parse_args()
    g1 = os.path.join(a.corpus, "devcontainer-v1.closure-graph.json")
    g2 = os.path.join(a.corpus, "devcontainer-v2.closure-graph.json")
    if not os.path.exists(g1):
        sh([sys.executable, os.path.join(ROOT, "benches", "corpus", "build.py"), a.corpus])
    if not os.path.exists(BIN):
        sh(["cargo", "build", "--release", "-p", "nix-layer"], cwd=ROOT)
    work = tempfile.mkdtemp(prefix="nix-layer-push-bench-", dir="/var/tmp")
    reg = Registry(work)
    try:
        rows = []
        machine = os.path.join(work, "machine")
        app0 = app_path(work, 0)
        G0 = graph_with(g1, app0, work, "g0.json")
        r0 = len(reg.requests())
        res = push(G0, f"{reg.host()}/bench/dev:0", machine)
        rows.append(("first push (devcontainer + app)", res, len(reg.requests()) - r0, None))
        cases = [("edit loop, warm local cache", machine, ["--cache", os.path.join(work, "cache")]),
                 ("edit loop, empty local cache", machine, []),
                 ("edit loop, fresh machine (verification)", os.path.join(work, "fresh"), []),
                 ("edit loop, fresh machine, --verify-index exact", os.path.join(work, "fresh-exact"),
                  ["--verify-index", "exact"])]
        for n, (label, m, extra) in enumerate(cases, start=1):
            if "--cache" in extra:  # warm the local cache first with the same image
                push(G0, f"{reg.host()}/bench/dev:warm", m, extra)
            app = app_path(work, n)
            g = graph_with(g1, app, work, f"g{n}.json")
            r0 = len(reg.requests())
            res = push(g, f"{reg.host()}/bench/dev:{n}", m, extra)
            rows.append((label, res, len(reg.requests()) - r0, app["narSize"]))
        app9 = app_path(work, 9)
        g9 = graph_with(g1, app9, work, "g9.json")
        t_skopeo = layout_then_skopeo(g9, f"{reg.host()}/bench/dev:skopeo", work, 9)
        t_sli = None
        if a.baseline:
            app8 = app_path(work, 8)
            t_sli = sli_then_skopeo(a.baseline, graph_with(g1, app8, work, "g8.json"), f"{reg.host()}/bench/dev:sli", work)
        r0 = len(reg.requests())
        res = push(graph_with(g2, app0, work, "g2.json"), f"{reg.host()}/bench/dev:openssl", machine)
        rows.append(("OpenSSL update (v1 -> v2)", res, len(reg.requests()) - r0, None))
        with open(g1) as f:
            old = {n["path"] for n in json.load(f)}
        with open(g2) as f:
            changed_bytes = sum(n["narSize"] for n in json.load(f) if n["path"] not in old)
        print(f"{'case':42s} {'time':>7s} {'sent':>12s} {'requests':>9s} {'uploads':>8s} {'not built':>9s} "
              f"{'proven':>7s} {'proof bytes':>12s}")
        for label, (t, sent, up, skipped, proven, proof_bytes), requests, changed in rows:
            print(f"{label:42s} {t:7.2f} {sent:12d} {requests:9d} {up:8d} {skipped:9d} {proven:7d} {proof_bytes:12d}"
                  + (f"   sent/changed {sent / changed:.3f}" if changed else ""))
        print(f"changed paths of the OpenSSL update: {changed_bytes} bytes (uncompressed NAR)")
        print(f"build --format oci + skopeo copy, one app change: {t_skopeo:.2f} s")
        for i in (2, 3, 4):
            print(f"  nix-layer push, {rows[i][0]}: {rows[i][1][0]:.2f} s, {t_skopeo / rows[i][1][0]:.1f}x faster")
        print(f"cost of verification (fresh machine against same machine, empty local cache): "
              f"{rows[3][1][0] - rows[2][1][0]:+.2f} s, {rows[3][1][5]} compressed bytes downloaded and unpacked")
        if t_sli is not None:
            print(f"stream_layered_image.py + skopeo copy, one app change: {t_sli:.2f} s "
                  f"({t_sli / rows[2][1][0]:.1f}x nix-layer push)")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

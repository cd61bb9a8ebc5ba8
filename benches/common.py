"""What the benchmark scripts share: the corpus, and how a run is timed."""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure_corpus(corpus, profiles, variants=("v1",)):
    """Builds the corpus (benches/corpus/build.py) unless every profile-variant graph is there."""
    if all(os.path.exists(f"{corpus}/{p}-{v}.closure-graph.json") for p in profiles for v in variants):
        return
    build = os.path.join(ROOT, "benches", "corpus", "build.py")
    print(f"building the corpus with {build} …", file=sys.stderr)
    subprocess.run([sys.executable, build, corpus, "--profiles", ",".join(profiles),
                    "--variants", ",".join(variants)], check=True)


def timed_rss(argv, stdout=subprocess.DEVNULL, shell=False, env=None):
    """Wall seconds and peak RSS (MiB) of the main process (the shell, for a pipeline)."""
    start = time.perf_counter()
    p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, shell=shell, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {argv}\n{err}")
    return wall, usage.ru_maxrss / 1024


def timed_cpu(argv):
    """Runs argv under /usr/bin/time: (wall s, user+sys s, peak MiB) of its whole process tree."""
    with tempfile.NamedTemporaryFile("r") as t:
        subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", t.name] + list(argv),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, user, sys_, rss = t.read().split()[-4:]
    return float(wall), float(user) + float(sys_), int(rss) / 1024

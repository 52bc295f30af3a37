"""Benchmark: BMMAL selection from a float16 cache larger than memory.

Writes a synthetic cache with ``mmal synth`` (K=309 classes, two modalities of
D=1,024 float16 features each, concat fusion, 10% labeled), then runs
``mmal.select.select(..., "bmmal", B, max_memory=X)`` on it, each in a child
process, and prints for each:

* the wall time;
* the peak RSS (``ru_maxrss`` of the child, from ``os.wait4``). It counts the
  pages of the memory-mapped spill file the process has touched, which the
  kernel drops under memory pressure, so the selection also reports its peak
  *anonymous* RSS (``RssAnon`` of /proc/self/status, sampled every 20 ms): the
  memory that must fit;
* for the selection, what spilled and the passes over ``u``: one write in the
  streaming pass, then one read per k-means++ refresh (of the rows that need
  products: the share is printed);
* the cache file's size against this machine's RAM (``MemTotal``).

Usage::

    python -m benchmarks.larger_than_ram --rows 50000 --budget 500 --max-memory 200M
    python -m benchmarks.larger_than_ram --rows 3000000 --budget 5000   # file 35.7 GiB > RAM

The full-scale run needs about 47 GiB of free disk (the 35.7 GiB cache and a
10.3 GiB spill file at 3M rows); measured on a 2-core VM, writing the cache took
13 minutes and the selection 5 (docs/performance.md). It runs once as a
benchmark, not in CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.peaks import AnonPeak

CLASSES = 309
DIMS = (1024, 1024)


def mem_total() -> int:
    """Bytes of RAM of this machine (``MemTotal``)."""
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")


def gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB"


class Records(logging.Handler):
    """Keeps the log records of the k-means++ summary and of the spill."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def find(self, prefix: str) -> logging.LogRecord | None:
        return next((r for r in self.records if r.msg.startswith(prefix)), None)


def run_child(args: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of ``args`` run as a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss * 1024, out


def child_select(path: str, budget: int, max_memory: str | None, out: str, seed: int) -> None:
    """Run the selection in this process and print its numbers as one JSON line."""
    from mmal.select.api import select  # here: the parent process stays light
    from mmal.select.strategies import bmmal

    seeding = {}
    kmeans_pp = bmmal.kmeans_pp

    def timed_kmeans_pp(*args, **kwargs):  # splits the wall time: streaming pass | seeding
        start = time.perf_counter()
        try:
            return kmeans_pp(*args, **kwargs)
        finally:
            seeding["s"] = time.perf_counter() - start

    bmmal.kmeans_pp = timed_kmeans_pp
    handler = Records()
    for name, level in (("mmal.select.kmeanspp", logging.DEBUG), ("mmal.select.memory", logging.INFO)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)
    with AnonPeak() as anon:
        start = time.perf_counter()
        index = select(path, "bmmal", budget, seed=seed, out=out, overwrite=True,
                       max_memory=max_memory)
        wall = time.perf_counter() - start
    summary = handler.find("k-means++:")
    spill = handler.find("working set of")
    print(json.dumps({
        "wall_s": wall, "seeding_s": seeding.get("s"), "picked": len(index),
        "anon_peak": anon.peak,
        "refreshes": summary.args[2] if summary else None,
        "dense_share": summary.args[4] if summary else None,
        "spill": spill.getMessage() if spill else None,
    }))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000, help="pool size N")
    parser.add_argument("--budget", type=int, default=5_000, help="samples to select B")
    parser.add_argument("--max-memory", default=None,
                        help="mmal select --max-memory (default: mmal's, a share of MemAvailable)")
    parser.add_argument("--dir", type=Path, default=Path("."), help="folder for the cache")
    parser.add_argument("--keep", action="store_true", help="keep the cache afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="select from the cache a --keep run left (no synth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=CLASSES, help=argparse.SUPPRESS)
    parser.add_argument("--dims", default=",".join(map(str, DIMS)), help=argparse.SUPPRESS)
    parser.add_argument("--child-select", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_select:
        path, budget, out, max_memory = args.child_select
        child_select(path, int(budget), None if max_memory == "-" else max_memory, out, args.seed)
        return

    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"larger-than-ram-n{args.rows}.h5"
    out = args.dir / f"larger-than-ram-n{args.rows}.json"
    print(f"N={args.rows:,} K={args.classes} D={args.dims} (float16) B={args.budget:,} "
          f"max-memory={args.max_memory or 'default'} load={os.getloadavg()[0]:.2f}", flush=True)
    try:
        if not (args.reuse and path.exists()):
            synth_wall, synth_rss, _ = run_child([
                sys.executable, "-m", "mmal", "synth", str(path), "-n", str(args.rows),
                "-k", str(args.classes), "--dims", args.dims, "--dtype", "float16",
                "--seed", str(args.seed), "--force"])
            print(f"synth   wall {synth_wall:9.1f} s   peak RSS {gib(synth_rss)}", flush=True)
        size = path.stat().st_size
        print(f"cache file {gib(size)} = {size / mem_total():.3f}x RAM ({gib(mem_total())})",
              flush=True)
        select_wall, select_rss, report = run_child([
            sys.executable, "-m", "benchmarks.larger_than_ram", "--seed", str(args.seed),
            "--child-select", str(path), str(args.budget), str(out), args.max_memory or "-"])
        numbers = json.loads(report.strip().splitlines()[-1])
        print(f"select  wall {select_wall:9.1f} s ({numbers['wall_s']:.1f} s in select(), of "
              f"which k-means++ {numbers['seeding_s']:.1f} s)   peak RSS {gib(select_rss)} (anonymous {gib(numbers['anon_peak'])})", flush=True)
        spilled = numbers["spill"]
        if spilled:
            what = re.search(r": (.*) spilled", spilled).group(1)
            print(f"spilled {what}")
        else:
            print("spilled nothing (the working set fit --max-memory)")
        print(f"passes over u: 1 write (streaming pass) + {numbers['refreshes']} refresh reads "
              f"(u products: {numbers['dense_share']:.0f}% of dense refreshes' work)")
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        out.with_name(f"{out.stem}.diagnostics.npz").unlink(missing_ok=True)
        out.with_name(f".{out.name}.lock").unlink(missing_ok=True)


if __name__ == "__main__":
    main()

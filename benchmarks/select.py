"""Benchmark: mmal's BMMAL selection against two reference implementations.

Prints, side by side in one run, the wall time and peak memory of the same work
(from the cache's arrays in memory to the chosen ids) for

* mmal: ``mmal.select.strategies.bmmal.select_bmmal`` on an in-memory view of the
  cache (exact k-means++ with a blocked bound, factorized embedding);
* (a) ``reference_published.py``: materialized embedding, distances to each new
  center, a scipy ``rv_discrete`` draw per center (KineticsSound scale only);
* (b) ``reference_badge.py``: factorized NumPy distances per center, a scipy
  ``rv_discrete`` draw per center;

and the whole ``mmal select --strategy bmmal`` command (reads the HDF5 cache,
writes the index file) in a subprocess.

Memory is measured from the operating system, not tracemalloc: a thread samples
this process's resident set size (``/proc/self/statm``) every 5 ms, and the
command's peak is the child's own ``VmHWM`` (read as it exits). That counts BLAS
and HDF5 buffers too. The references are single-threaded, so the sampler runs
on an idle core beside them; mmal uses every core, so its timed runs go without
the sampler and one more run measures its memory.

Usage::

    python -m benchmarks.select --scale ks            # N=14,739 K=31 D=1,024 B=500
    python -m benchmarks.select --scale vgg --ref-prefix 500   # N=180,911 K=309 B=5,000

At VGGSound scale reference (b) takes long; ``--ref-prefix P`` runs its first P
centers and extrapolates linearly to the budget (its cost per center does not
depend on how many centers exist). The output labels such numbers as
extrapolated.
"""

from __future__ import annotations

import os
import sys

# This file is named like the stdlib module `select`; drop its folder from the front of
# sys.path before anything imports `select`, and look the references up at the end.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import reference_badge  # noqa: E402
import reference_published  # noqa: E402
import scipy.stats  # noqa: E402, F401
import tqdm.auto  # noqa: E402, F401
from peaks import RssPeak  # noqa: E402

# Import everything the timed code imports lazily, so no implementation pays import time.
import mmal.select.strategies.bmmal  # noqa: E402, F401

#: Issue 14's targets: speed-up of mmal over reference (b) per scale, and the
#: whole command's peak memory as a multiple of the cache arrays it reads.
SPEEDUP_TARGETS = {"ks": 10.0, "vgg": 30.0}
PEAK_TARGET = 1.0

SCALES = {
    "ks": dict(num_samples=14_739, num_classes=31, feature_dims=(512, 512), budget=500),
    "vgg": dict(num_samples=180_911, num_classes=309, feature_dims=(512, 512), budget=5_000),
}


class MemoryCache:
    """The slice of mmal's Cache interface that select_bmmal uses, over in-memory arrays."""

    def __init__(self, meta, arrays: dict[str, np.ndarray]) -> None:
        self.meta, self.arrays = meta, arrays
        self.labeled = arrays["labeled"]
        self.num_samples = len(self.labeled)

    def row_blocks(self, block_rows: int = 65536):
        for start in range(0, self.num_samples, block_rows):
            yield slice(start, min(start + block_rows, self.num_samples))

    def logits(self, name: str = "mm", rows=None):
        return self.arrays[f"logits/{name}"][rows]

    def features(self, modality: str, rows=None):
        return self.arrays[f"features/{modality}"][rows]

    def coalitions(self, rows=None):
        return self.arrays["coalitions"][rows]


def ensure_cache(path: Path, scale: dict) -> Path:
    from mmal.cache.synthetic import make_synthetic_cache

    if not path.exists():
        print(f"building {path} ...", flush=True)
        make_synthetic_cache(path, num_samples=scale["num_samples"],
                             num_classes=scale["num_classes"],
                             feature_dims=scale["feature_dims"], seed=0)
    return path


def load_arrays(path: Path):
    """Every array the selection reads, fully in memory."""
    from mmal.cache import open_cache

    with open_cache(path) as cache:
        meta = cache.meta
        arrays = {"ids": cache.ids, "labeled": cache.labeled, "logits/mm": cache.logits("mm"),
                  "coalitions": cache.coalitions()}
        for m in meta.modalities:
            arrays[f"features/{m}"] = cache.features(m)
    return meta, arrays


def run_mmal(meta, arrays, budget, seed, block_size):
    from mmal.select.strategies.bmmal import select_bmmal

    cache = MemoryCache(meta, arrays)
    sel = select_bmmal(cache, budget, rng=np.random.default_rng(seed), block_size=block_size)
    return arrays["ids"][sel.positions]


def _unlabeled(meta, arrays):
    keep = ~arrays["labeled"]
    features = [arrays[f"features/{m}"][keep] for m in meta.modalities]
    return arrays["logits/mm"][keep], arrays["coalitions"][keep], features, keep


def run_reference(module, meta, arrays, budget, seed, **kwargs):
    logits, coalitions, features, keep = _unlabeled(meta, arrays)
    picks = module.select(logits, coalitions, features, meta.fusion, budget,
                          np.random.default_rng(seed), **kwargs)
    return arrays["ids"][np.flatnonzero(keep)[picks]]


def measure(label, func, *, memory=True):
    """Wall time of ``func()``, and its peak RSS from a sampling thread when ``memory``.

    The sampler wakes every 5 ms: beside a single-threaded reference it runs on
    an idle core, but it takes a core from mmal's worker threads, so mmal's
    timed runs go without it and one more run measures its memory.
    """
    with RssPeak() if memory else contextlib.nullcontext() as mem:
        start = time.perf_counter()
        ids = func()
        wall = time.perf_counter() - start
    return {"label": label, "wall_s": wall, "peak_rss": mem.peak if memory else None,
            "start_rss": mem.start if memory else None, "ids": ids}


def run_command(cache: Path, budget: int, seed: int, out: Path) -> dict:
    """Time the whole `mmal select --strategy bmmal` command in a fresh process.

    Its peak memory is the child's own ``VmHWM`` (read at exit): ``ru_maxrss`` of a
    child on Linux also carries the parent's resident set from before ``exec``.
    """
    argv = ["mmal", "select", "--strategy", "bmmal", "--budget", str(budget), "--cache",
            str(cache), "--seed", str(seed), "--device", "cpu", "--out", str(out), "--force"]
    code = (
        "import atexit, sys\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            sys.stderr.write('VMHWM_KB ' + line.split()[1] + '\\n')\n"
        "atexit.register(hwm)\n"
        f"sys.argv = {argv!r}\n"
        "from mmal.cli import main\n"
        "main()\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mmal select failed:\n{done.stdout}{done.stderr}")
    peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines()
                       if line.startswith("VMHWM_KB")))
    return {"wall_s": wall, "peak_rss": peak_kb * 1024, "output": done.stdout.strip()}


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="ks")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/mmal-bench"))
    parser.add_argument("--budget", type=int, default=None, help="override the scale's budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=None, help="mmal k-means++ block size")
    parser.add_argument("--ref-prefix", type=int, default=None,
                        help="run reference (b) for this many centers and extrapolate")
    parser.add_argument("--skip-references", action="store_true")
    parser.add_argument("--skip-command", action="store_true")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed mmal runs; the median is compared (the references run once)")
    args = parser.parse_args(argv)

    scale = SCALES[args.scale]
    budget = args.budget or scale["budget"]
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    cache_path = ensure_cache(args.cache_dir / f"{args.scale}.h5", scale)
    meta, arrays = load_arrays(cache_path)
    read_keys = ["ids", "labeled", "logits/mm", "coalitions",
                 *[f"features/{m}" for m in meta.modalities]]
    arrays_bytes = sum(arrays[k].nbytes for k in read_keys)
    n_unlabeled = int((~arrays["labeled"]).sum())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, python {platform.python_version()}")
    print(f"scale {args.scale}: N={len(arrays['ids']):,} (unlabeled {n_unlabeled:,}), "
          f"K={meta.num_classes}, D={meta.fused_dim}, M={meta.num_modalities}, B={budget:,}")
    print(f"cache arrays read (ids, labeled, logits/mm, coalitions, features): {gib(arrays_bytes)}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()

    def mmal_run(memory):
        return measure("mmal bmmal (in memory)",
                       lambda: run_mmal(meta, arrays, budget, args.seed, args.block_size),
                       memory=memory)

    runs = sorted((mmal_run(memory=False) for _ in range(max(1, args.repeats))),
                  key=lambda r: r["wall_s"])
    median = dict(runs[len(runs) // 2])  # the median run, so load spikes do not decide the ratio
    memory_run = mmal_run(memory=True)  # one more run, for the peak RSS only
    median.update(peak_rss=memory_run["peak_rss"], start_rss=memory_run["start_rss"])
    results = [median]
    if not args.skip_references:
        if args.scale == "ks":
            results.append(measure("(a) published: materialized + rv_discrete",
                                   lambda: run_reference(reference_published, meta, arrays,
                                                         budget, args.seed)))
        prefix = args.ref_prefix if args.ref_prefix and args.ref_prefix < budget else None
        label = "(b) BADGE factorized + rv_discrete"
        res = measure(label if prefix is None else f"{label} [first {prefix} centers]",
                      lambda: run_reference(reference_badge, meta, arrays, budget, args.seed,
                                            stop_after=prefix))
        if prefix is not None:
            # Setup (factors, first center) is paid once; the loop cost is linear in centers.
            setup = measure("(b) setup only", lambda: run_reference(
                reference_badge, meta, arrays, budget, args.seed, stop_after=1))
            per_center = (res["wall_s"] - setup["wall_s"]) / (prefix - 1)
            res["measured_s"] = res["wall_s"]
            res["setup_s"] = setup["wall_s"]
            res["wall_s"] = setup["wall_s"] + per_center * (budget - 1)
            res["extrapolated"] = True
        results.append(res)

    print(f"{'implementation':<48} {'time':>12} {'peak RSS':>11} {'peak / arrays':>14} "
          f"{'extra over arrays':>18}")
    for res in results:
        note = " (EXTRAPOLATED)" if res.get("extrapolated") else ""
        extra = res["peak_rss"] - res["start_rss"]
        print(f"{res['label']:<48} {res['wall_s']:>10.2f} s {gib(res['peak_rss']):>11} "
              f"{res['peak_rss'] / arrays_bytes:>13.2f}x {gib(extra):>18}{note}")
        if res.get("extrapolated"):
            print(f"{'':<4}measured {res['measured_s']:.1f} s for {args.ref_prefix} centers "
                  f"(setup {res['setup_s']:.1f} s), extrapolated linearly to {budget:,}")
    mmal = results[0]
    times = [r["wall_s"] for r in runs]
    print(f"mmal runs: {', '.join(f'{t:.2f}' for t in times)} s (median compared below)")
    for res in results[1:]:
        print(f"speed-up of mmal over {res['label'].split(':')[0].split(' [')[0]}: "
              f"{res['wall_s'] / mmal['wall_s']:.1f}x"
              + (" (vs extrapolated time)" if res.get("extrapolated") else "")
              + f"  [{res['wall_s'] / times[-1]:.1f}x to {res['wall_s'] / times[0]:.1f}x over "
              "the slowest and fastest mmal run]")
        if res["label"].startswith("(b)"):
            ratio, target = res["wall_s"] / mmal["wall_s"], SPEEDUP_TARGETS[args.scale]
            print(f"    target: >= {target:.0f}x over (b) at this scale: "
                  f"{'met' if ratio >= target else 'NOT met'} ({ratio:.1f}x)")
        first_same = res["ids"][0] == mmal["ids"][0]
        print(f"    same first center (largest norm) as mmal: {bool(first_same)}")

    if not args.skip_command:
        cmd = run_command(cache_path, budget, args.seed, args.cache_dir / f"{args.scale}-sel.json")
        print()
        print(f"`mmal select --strategy bmmal --budget {budget}` (whole command, reads the HDF5 "
              f"cache): {cmd['wall_s']:.2f} s, peak RSS {gib(cmd['peak_rss'])} "
              f"= {cmd['peak_rss'] / arrays_bytes:.2f}x the cache arrays read")
        print(f"    {cmd['output'].splitlines()[0]}")
        if args.scale == "vgg":  # at KineticsSound scale the interpreter alone is larger
            print(f"    target: peak <= {PEAK_TARGET:.1f}x the cache arrays: "
                  f"{'met' if cmd['peak_rss'] <= PEAK_TARGET * arrays_bytes else 'NOT met'}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

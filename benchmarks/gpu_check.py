"""Every GPU path of mmal in one command, ending in one table of "ok", "FAILED" or "not run: why".

Checks (each in its own subprocess, with its own timeout, so one that fails,
hangs or crashes the CUDA driver does not stop the others):

==================  ================================================================
cupy-ids            bmmal and badge pick the same ids with CuPy as with NumPy (float64)
faiss-gpu           coreset and kmeans on FAISS-GPU against the same on FAISS-CPU
bmmal-vgg-time      bmmal at VGGSound scale (N=180,911, K=309, D=1,024, B=5,000) on the
                    GPU, from the cache arrays in memory: target <= 2 s
extract-throughput  extraction samples/s against a bare forward on the GPU: >= 0.9
torchrun-nccl       ``mmal train`` and ``mmal extract`` under one-GPU torchrun (NCCL)
==================  ================================================================

Without a GPU every line reads "not run: no GPU" and the exit status is 0;
with one, the exit status is 1 when any check FAILED. The whole run stays
under :data:`TOTAL_BUDGET_S` (8 minutes on one GPU): a check that would
start with too little time left is reported "not run: out of time".

Usage::

    benchmarks/gpu_check.sh                      # every check
    benchmarks/gpu_check.sh --only cupy-ids faiss-gpu
    benchmarks/gpu_check.sh --dry-run            # the table, nothing run
    python -m benchmarks.gpu_check --keep /tmp/gc  # keep the work folder
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Seconds the whole run may take; each check also has its own timeout.
TOTAL_BUDGET_S = 470

#: A check that would start with fewer seconds than this left is not started.
MIN_START_S = 20

#: Marks the child's result line on its stdout.
RESULT_TAG = "GPU_CHECK_RESULT "

#: bmmal at VGGSound scale on one GPU must take at most this many seconds.
VGG_TARGET_S = 2.0

ROOT = Path(__file__).resolve().parents[1]


class NotRun(Exception):
    """A prerequisite is missing: the check reports "not run: <message>"."""


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    timeout_s: int
    run: Callable[[Path], str]  # returns the detail of an "ok"; raises AssertionError to fail


def _env_with_root() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (mmal and benchmarks import)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


# ---- prerequisites -----------------------------------------------------------------------


def gpu_missing() -> str | None:
    """Why no GPU can be used here ("no GPU ..."), or None when one is visible."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "no GPU (CUDA_VISIBLE_DEVICES hides every device)"
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            listed = None
        if listed is not None and listed.returncode == 0 and "GPU" in listed.stdout:
            return None
    # No nvidia-smi (some containers): ask torch, in a subprocess so this process stays light.
    try:
        probe = subprocess.run([sys.executable, "-c",
                                "import torch; print(torch.cuda.device_count())"],
                               capture_output=True, text=True, timeout=120)
        count = int(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else 0
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        count = 0
    return None if count > 0 else "no GPU"


def _cupy():
    try:
        import cupy
    except ImportError as exc:
        raise NotRun(f"CuPy is not installed ({exc}); pip install 'mmal[gpu]'") from None
    if cupy.cuda.runtime.getDeviceCount() == 0:
        raise NotRun("CuPy sees no GPU")
    return cupy


def _torch_cuda():
    import torch

    if not torch.cuda.is_available():
        raise NotRun(f"torch {torch.__version__} has no CUDA device (a CPU build?)")
    return torch


# ---- the checks --------------------------------------------------------------------------


def check_cupy_ids(work: Path) -> str:
    """bmmal and badge in float64: the same ids on NumPy and CuPy."""
    _cupy()
    from mmal.cache.synthetic import make_synthetic_cache
    from mmal.select.api import select

    cache = make_synthetic_cache(work / "ids.h5", num_samples=20_000, num_classes=50,
                                 feature_dims=(256, 256), seed=1, overwrite=True)
    notes = []
    for strategy in ("bmmal", "badge"):
        ids = {device: select(cache, strategy, 1000, seed=3, device=device, precision="float64",
                              out=work / f"{strategy}-{device}.json", overwrite=True).ids
               for device in ("cpu", "cuda")}
        differ = np.flatnonzero(ids["cpu"] != ids["cuda"])
        assert len(differ) == 0, (f"{strategy}: the ids differ first at pick {differ[0]} of "
                                  f"{len(ids['cpu'])} ({len(differ)} differ)")
        notes.append(f"{strategy} 1000 of 18000 equal")
    return "; ".join(notes)


def _coverage(points: np.ndarray, picked: np.ndarray) -> float:
    """Mean squared distance of every point to its nearest picked point (float64)."""
    from mmal.select.strategies.coreset import min_sq_distances

    return float(min_sq_distances(points, points[picked]).mean())


def check_faiss_gpu(work: Path) -> str:
    """coreset and kmeans with FAISS on the GPU against FAISS on the CPU."""
    cupy = _cupy()
    from mmal.cache import open_cache
    from mmal.cache.synthetic import make_synthetic_cache
    from mmal.select.api import select
    from mmal.select.knn import faiss_uses_gpu
    from mmal.select.scoring import head_inputs

    if not faiss_uses_gpu(cupy):
        raise NotRun("FAISS has no GPU support here (faiss-cpu); pip install faiss-gpu-cu12")
    path = make_synthetic_cache(work / "faiss.h5", num_samples=20_000, num_classes=20,
                                feature_dims=(128, 128), seed=2, overwrite=True)
    with open_cache(path) as cache:
        mask = ~cache.labeled
        points = head_inputs(cache, mask)
        row_of_id = {int(i): k for k, i in enumerate(cache.ids[mask])}
    notes = []
    for strategy, budget in (("coreset", 500), ("kmeans", 200)):
        ids = {device: select(path, strategy, budget, seed=4, device=device,
                              out=work / f"{strategy}-{device}.json", overwrite=True).ids
               for device in ("cpu", "cuda")}
        shared = len(set(ids["cpu"].tolist()) & set(ids["cuda"].tolist())) / budget
        cover = {d: _coverage(points, np.array([row_of_id[int(i)] for i in ids[d]]))
                 for d in ids}
        gap = abs(cover["cuda"] - cover["cpu"]) / cover["cpu"]
        # coreset is deterministic up to float32 near-ties; FAISS k-means is not
        # bit-reproducible across devices, so it is judged by what it optimises.
        if strategy == "coreset":
            assert shared >= 0.99, f"coreset: only {shared:.1%} of the ids agree"
        assert gap <= 0.02, (f"{strategy}: coverage {cover['cuda']:.4g} on the GPU against "
                             f"{cover['cpu']:.4g} on the CPU ({gap:.1%} apart)")
        notes.append(f"{strategy} {shared:.0%} same ids, coverage {gap:.2%} apart")
    return "; ".join(notes)


def check_bmmal_vgg_time(work: Path) -> str:
    """bmmal at VGGSound scale on the GPU from in-memory cache arrays: at most 2 s."""
    cupy = _cupy()
    from benchmarks.select import SCALES, MemoryCache, ensure_cache, load_arrays
    from mmal.select.strategies.bmmal import select_bmmal

    scale = SCALES["vgg"]
    path = ensure_cache(work / "vgg.h5", scale)
    meta, arrays = load_arrays(path)
    cache = MemoryCache(meta, arrays)
    select_bmmal(cache, 200, rng=np.random.default_rng(0), xp=cupy)  # warm-up: kernels compile
    times = []
    for _ in range(2):
        start = time.perf_counter()
        picks = select_bmmal(cache, scale["budget"], rng=np.random.default_rng(0), xp=cupy)
        cupy.cuda.Device().synchronize()
        times.append(time.perf_counter() - start)
    assert len(set(picks.positions.tolist())) == scale["budget"], "repeated picks"
    best = min(times)
    detail = (f"{best:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)} s; "
              f"target <= {VGG_TARGET_S:.0f} s)")
    assert best <= VGG_TARGET_S, detail
    return detail


def check_extract_throughput(work: Path) -> str:
    """Extraction samples/s against the bare forward of the same model on the GPU."""
    _torch_cuda()
    from benchmarks.extract import TARGET_RATIO, measure, parser

    args = parser().parse_args(["--device", "cuda", "--samples", "2048", "--image-size", "112",
                                "--batch-size", "128", "--num-workers", "4", "--repeats", "2"])
    res = measure(args)
    ratio = res["extract_rate"] / res["forward_rate"]
    detail = (f"ratio {ratio:.2f} (extraction {res['extract_rate']:.0f}/s, forward "
              f"{res['forward_rate']:.0f}/s; target >= {TARGET_RATIO})")
    assert ratio >= TARGET_RATIO, detail
    return detail


def check_torchrun_nccl(work: Path) -> str:
    """``mmal train`` and ``mmal extract`` under torchrun with one GPU and NCCL."""
    torch = _torch_cuda()
    if not torch.distributed.is_nccl_available():
        raise NotRun("this torch build has no NCCL")
    from benchmarks.extract import make_data, write_config
    from mmal.workspace import init_workspace, round_paths

    root = work / "ddp"
    shutil.rmtree(root, ignore_errors=True)
    make_data(root, 256, 32, dim=32)
    config = argparse.Namespace(encoder="resnet18", image_size=32, num_workers=2)
    ws = init_workspace(root / "ws", write_config(root, config))
    env = {**_env_with_root(), "MMAL_DIST_TIMEOUT_S": "120"}
    for stage in ("train", "extract"):
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
             "1", "-m", "mmal", "-v", stage, "--workspace", str(ws), "--round", "0",
             "--device", "cuda"],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=150)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        assert proc.returncode == 0, f"{stage} exited {proc.returncode}: {' | '.join(tail)}"
        assert "nccl process group on cuda:0" in proc.stderr, (
            f"{stage}: no NCCL process group in its log: {' | '.join(tail)}")
    paths = round_paths(ws, 0)
    assert paths.model.exists() and paths.cache.exists(), "model.pt or cache.h5 missing"
    return "train and extract ran on an NCCL group of 1"


CHECKS = [
    Check("cupy-ids", "CuPy vs NumPy ids, float64", 90, check_cupy_ids),
    Check("faiss-gpu", "FAISS-GPU coreset and kmeans vs CPU", 90, check_faiss_gpu),
    Check("bmmal-vgg-time", "bmmal at VGGSound scale on the GPU", 200, check_bmmal_vgg_time),
    Check("extract-throughput", "extraction vs bare forward", 120, check_extract_throughput),
    Check("torchrun-nccl", "one-GPU NCCL torchrun train + extract", 120, check_torchrun_nccl),
]
BY_NAME = {check.name: check for check in CHECKS}


# ---- running them ------------------------------------------------------------------------


def run_child(name: str, work: Path) -> int:
    """Run one check in this process and print its result line (the parent reads it)."""
    try:
        status, detail = "ok", BY_NAME[name].run(work)
    except NotRun as exc:
        status, detail = f"not run: {exc}", ""
    except AssertionError as exc:
        status, detail = "FAILED", str(exc)
    except Exception as exc:  # noqa: BLE001 - any error is this check's failure, reported
        status, detail = "FAILED", f"{type(exc).__name__}: {exc}"
    print(RESULT_TAG + json.dumps({"status": status, "detail": detail}), flush=True)
    return 0


def run_isolated(command: Sequence[str], timeout_s: float) -> tuple[str, str]:
    """(status, detail) of a child command that prints one result line.

    The child runs in its own session, so a timeout ends it and everything it
    started (torchrun's workers) together.
    """
    start = time.monotonic()
    proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True,
                            env=_env_with_root())
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "FAILED", f"timed out after {timeout_s:.0f} s"
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            took = f"[{time.monotonic() - start:.0f} s]"
            return result["status"], f"{result['detail']} {took}".strip()
    last = (err.strip().splitlines() or ["no output"])[-1]
    return "FAILED", f"crashed (exit status {proc.returncode}): {last}"


def run_checks(checks: Sequence[Check], work: Path, skip_reason: str | None,
               budget_s: float) -> list[tuple[Check, str, str]]:
    """(check, status, detail) of every check, each in its own subprocess."""
    results = []
    deadline = time.monotonic() + budget_s
    for check in checks:
        left = deadline - time.monotonic()
        if skip_reason is not None:
            results.append((check, f"not run: {skip_reason}", ""))
        elif left < MIN_START_S:
            results.append((check, f"not run: out of time (whole run limited to {budget_s:.0f} s)",
                            ""))
        else:
            command = [sys.executable, "-m", "benchmarks.gpu_check", "--child", check.name,
                       "--workdir", str(work)]
            status, detail = run_isolated(command, min(check.timeout_s, left))
            results.append((check, status, detail))
            print(f"{check.name}: {status} {detail}", file=sys.stderr, flush=True)
    return results


def format_table(results: Sequence[tuple[Check, str, str]]) -> str:
    """One line per check: name, what it checks, status and detail."""
    lines = [f"{'check':<20} {'what':<40} result", "-" * 100]
    for check, status, detail in results:
        lines.append(f"{check.name:<20} {check.title:<40} {status}"
                     + (f"  ({detail})" if detail else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run mmal's GPU checks and print one line per check: ok, FAILED or "
                    "'not run: why'. Exit status 1 when a check FAILED.",
        epilog="Example: benchmarks/gpu_check.sh --only cupy-ids faiss-gpu")
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), metavar="CHECK",
                        help=f"run these checks only ({', '.join(BY_NAME)})")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the table without running anything")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--budget", type=float, default=TOTAL_BUDGET_S,
                        help=f"seconds for the whole run [default: {TOTAL_BUDGET_S}]")
    parser.add_argument("--child", choices=sorted(BY_NAME), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, args.workdir)

    checks = [BY_NAME[name] for name in args.only] if args.only else CHECKS
    skip = "dry run" if args.dry_run else gpu_missing()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        results = run_checks(checks, args.keep, skip, args.budget)
    else:
        with tempfile.TemporaryDirectory(prefix="mmal-gpu-check-") as tmp:
            results = run_checks(checks, Path(tmp), skip, args.budget)
    print(format_table(results))
    return 1 if any(status == "FAILED" for _, status, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())

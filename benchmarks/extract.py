"""Extraction throughput next to the same model's bare forward throughput on the same data.

Builds a throwaway workspace (random images + vectors in a manifest, ResNet-18 +
MLP by default), trains one short epoch to get a model.pt, then measures

- bare forward: the eval DataLoader over the whole pool and ``model(inputs)``;
- extraction: ``extract_round`` (features, logits, 2^M coalitions, optional MC
  dropout, written through the background writer into cache.h5);

each ``--repeats`` times (best run kept), and prints samples/s and the ratio
extraction / forward (target >= 0.9).

Example::

    .venv/bin/python -m benchmarks.extract --samples 1024 --image-size 64 --device cpu

(Run it as a module: run as a script, the folder's select.py would shadow the
standard library's select module.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

#: Extraction must reach this share of the bare forward's samples/s.
TARGET_RATIO = 0.9


def make_data(root: Path, n: int, size: int, dim: int, seed: int = 0) -> Path:
    """A manifest of n samples (random RGB image + .npy vector, 4 classes); returns the config."""
    rng = np.random.default_rng(seed)
    (root / "data" / "files").mkdir(parents=True)
    (root / "data" / "classes.txt").write_text("a\nb\nc\nd\n")
    lines = ["id,label,image,vector"]
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "data" / "files" / f"{i}.png")
        np.save(root / "data" / "files" / f"{i}.npy", rng.normal(size=dim).astype(np.float32))
        lines.append(f"{i},{'abcd'[i % 4]},files/{i}.png,files/{i}.npy")
    (root / "data" / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "data" / "test.csv").write_text("\n".join(lines[:9]) + "\n")
    return root


def write_config(root: Path, args) -> Path:
    text = f"""
[dataset]
kind = "manifest"
root = "data"

[modalities.image]
kind = "image"
encoder = "{args.encoder}"
image_size = {args.image_size}

[modalities.vector]
kind = "vector"
encoder = "mlp"
dim = 64

[model]
fusion = "concat"
dropout = 0.1

[train]
epochs = 1
batch_size = 16
num_workers = {args.num_workers}

[al]
initial_budget = 32
seed = 0
"""
    path = root / "bench.toml"
    path.write_text(text)
    return path


def bare_forward(ws: Path, args) -> float:
    """Seconds for the eval DataLoader + model forward over the whole pool."""
    import torch

    from mmal.data import MultimodalDataset, collate, load_pool
    from mmal.models import model_from_checkpoint
    from mmal.models.checkpoint import load_checkpoint
    from mmal.models.runtime import inputs_to, resolve_device
    from mmal.workspace import load_workspace_config, round_paths

    config = load_workspace_config(ws)
    dev = resolve_device(args.device)
    model = model_from_checkpoint(load_checkpoint(round_paths(ws, 0).model), config).to(dev).eval()
    pool = load_pool(config, "train")
    loader = torch.utils.data.DataLoader(
        MultimodalDataset(pool, config.modalities, training=False), batch_size=args.batch_size,
        collate_fn=collate, num_workers=args.num_workers, pin_memory=dev.type == "cuda")
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            out = model(inputs_to(batch["inputs"], dev))
            out.logits_mm.cpu()  # synchronise like extraction's copy to the host does
    return time.perf_counter() - start


def extraction(ws: Path, args) -> float:
    from mmal.extract import extract_round

    start = time.perf_counter()
    extract_round(ws, 0, device=args.device, batch_size=args.batch_size,
                  num_workers=args.num_workers, mc_dropout=args.mc_dropout, dtype=args.dtype,
                  force=True, progress=False)
    return time.perf_counter() - start


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--encoder", default="resnet18", choices=["resnet18", "resnet50", "resnet101"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--mc-dropout", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Samples/s of the bare forward and of extraction (best of ``args.repeats`` each)."""
    import torch

    from mmal.train import train_round
    from mmal.workspace import init_workspace, round_paths

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_data(Path(tmp), args.samples, args.image_size, dim=32)
        ws = init_workspace(root / "ws", write_config(root, args))
        train_round(ws, 0, device=args.device, progress=False)
        bare_forward(ws, args)  # warm-up (allocator, caches)
        forward_s, extract_s = [], []
        for _ in range(args.repeats):  # interleaved so load drift hits both alike
            forward_s.append(bare_forward(ws, args))
            extract_s.append(extraction(ws, args))
        size = round_paths(ws, 0).cache.stat().st_size
    n = args.samples
    return {"forward_s": forward_s, "extract_s": extract_s, "cache_bytes": size,
            "forward_rate": n / min(forward_s), "extract_rate": n / min(extract_s),
            "threads": torch.get_num_threads()}


def main() -> None:
    args = parser().parse_args()
    res = measure(args)
    fwd, ext = res["forward_rate"], res["extract_rate"]
    print(f"device={args.device} encoder={args.encoder} image={args.image_size}px "
          f"samples={args.samples} batch={args.batch_size} workers={args.num_workers} "
          f"mc_dropout={args.mc_dropout} dtype={args.dtype} threads={res['threads']}")
    print(f"bare forward : {fwd:9.1f} samples/s  (best of {args.repeats}: "
          f"{', '.join(f'{t:.2f}s' for t in res['forward_s'])})")
    print(f"extraction   : {ext:9.1f} samples/s  (best of {args.repeats}: "
          f"{', '.join(f'{t:.2f}s' for t in res['extract_s'])}), cache "
          f"{res['cache_bytes'] / 2**20:.1f} MiB written")
    print(f"ratio extraction / forward = {ext / fwd:.3f}  (target >= {TARGET_RATIO})")


if __name__ == "__main__":
    main()

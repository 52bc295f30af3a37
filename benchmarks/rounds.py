"""One active-learning round end to end with frozen encoders, with the encoder-output store and without.

Builds a throwaway workspace on generated data (``--samples`` train images +
wav clips, 4 classes, and a test split), with the image and audio ResNet-18s
frozen on fixed local weights (random, saved once: what a user's pretrained
state dicts look like to mmal). Then times one round, ``train_round`` +
``extract_round`` + ``select`` (BMMAL), twice on the same round:

- **without the store** (``store=False``): every epoch decodes the labeled
  images and clips and runs both encoders; extraction decodes and encodes the
  whole pool;
- **with the store**, after it was filled once (timed separately: that is a
  once-per-workspace cost): train and extract read the stored features and run
  only the fusion and heads.

It prints each stage's seconds and the ratio without / with (target >= 20 on
a 2-core CPU).

Example::

    .venv/bin/python -m benchmarks.rounds --samples 1000 --device cpu

(Run it as a module: run as a script, the folder's select.py would shadow the
standard library's select module.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("a", "b", "c", "d")


def make_data(root: Path, n_train: int, n_test: int, *, image_px: int, rate: int,
              seconds: float, seed: int = 0) -> Path:
    """A manifest of random RGB images and noisy tones (pitch by class); returns the data folder."""
    rng = np.random.default_rng(seed)
    files = root / "data" / "files"
    files.mkdir(parents=True)
    (root / "data" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    t = np.arange(int(rate * seconds)) / rate
    for split, lo, hi in (("train", 0, n_train), ("test", n_train, n_train + n_test)):
        lines = ["id,label,image,audio"]
        for i in range(lo, hi):
            label = i % len(CLASSES)
            pixels = rng.integers(0, 256, (image_px, image_px, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(files / f"{i}.png")
            tone = 0.5 * np.sin(2 * np.pi * (300 + 200 * label) * t) + 0.1 * rng.normal(size=t.size)
            with wave.open(str(files / f"{i}.wav"), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(rate)
                out.writeframes((np.clip(tone, -1, 1) * 32767).astype("<i2").tobytes())
            lines.append(f"{i},{CLASSES[label]},files/{i}.png,files/{i}.wav")
        (root / "data" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root / "data"


def save_weights(root: Path) -> dict[str, Path]:
    """Fixed random weights of the image and audio ResNet-18, as local state dicts."""
    import torch

    from mmal.config import ModalityConfig
    from mmal.models.encoders import build_encoder

    out = {}
    for seed, (kind, encoder) in enumerate((("image", "resnet18"), ("audio", "audio-resnet18"))):
        torch.manual_seed(seed)
        net = build_encoder(ModalityConfig(kind, kind, encoder), load_weights=False)
        out[kind] = root / f"{kind}.pt"
        torch.save(net.state_dict(), out[kind])
    return out


def write_config(root: Path, weights: dict[str, Path], args) -> Path:
    text = f"""
[dataset]
kind = "manifest"
root = "data"

[modalities.image]
kind = "image"
encoder = "resnet18"
image_size = {args.image_size}
pretrained = "{weights['image']}"
freeze = true

[modalities.audio]
kind = "audio"
encoder = "audio-resnet18"
sample_rate = {args.sample_rate}
clip_seconds = {args.clip_seconds}
pretrained = "{weights['audio']}"
freeze = true

[model]
fusion = "concat"

[train]
epochs = {args.epochs}
batch_size = {args.batch_size}
num_workers = {args.num_workers}
augment = false

[al]
initial_budget = {args.labeled}
budget = {args.budget}
seed = 0
"""
    path = root / "bench.toml"
    path.write_text(text)
    return path


def one_round(rnd, args, *, store: bool, tag: str) -> dict[str, float]:
    """Seconds of train, extract and select for round ``rnd`` (its outputs replaced)."""
    from mmal.extract import extract_round
    from mmal.select import select
    from mmal.train import train_round

    times = {}
    start = time.perf_counter()
    train_round(rnd, device=args.device, progress=False, force=True, store=store)
    times["train"] = time.perf_counter() - start
    start = time.perf_counter()
    extract_round(rnd, device=args.device, progress=False, force=True, store=store,
                  batch_size=args.batch_size, num_workers=args.num_workers)
    times["extract"] = time.perf_counter() - start
    start = time.perf_counter()
    select(rnd.paths.cache, "bmmal", args.budget, seed=0, device="cpu", overwrite=True,
           out=rnd.paths.selections / f"bench-{tag}.json")
    times["select"] = time.perf_counter() - start
    times["round"] = sum(times.values())
    return times


def fill_store(rnd, args) -> float:
    """Seconds to compute the store over both splits (once per workspace)."""
    import torch

    from mmal.encoded import load_or_encode
    from mmal.models import build_model
    from mmal.models.runtime import resolve_device

    start = time.perf_counter()
    dev = resolve_device(args.device)
    model = build_model(rnd.config, rnd.pool("train")).to(dev)
    with torch.random.fork_rng():
        load_or_encode(model, rnd.config, [rnd.pool("train"), rnd.pool("test")], rnd.encoded,
                       dev, batch_size=args.batch_size, num_workers=args.num_workers)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000, help="train pool size")
    parser.add_argument("--test-samples", type=int, default=200)
    parser.add_argument("--labeled", type=int, default=100, help="labeled set of the round")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--clip-seconds", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()

    import torch

    from mmal.workspace import init_workspace, open_round

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_data(root, args.samples, args.test_samples, image_px=args.image_size,
                  rate=args.sample_rate, seconds=args.clip_seconds)
        ws = init_workspace(root / "ws", write_config(root, save_weights(root), args))
        rnd = open_round(ws, 0)
        without = one_round(rnd, args, store=False, tag="without")
        fill_s = fill_store(rnd, args)
        with_store = one_round(rnd, args, store=True, tag="with")
    load = os.getloadavg()
    print(f"device={args.device} threads={torch.get_num_threads()} cores={os.cpu_count()} "
          f"load={load[0]:.1f},{load[1]:.1f},{load[2]:.1f} samples={args.samples} "
          f"test={args.test_samples} labeled={args.labeled} epochs={args.epochs} "
          f"image={args.image_size}px audio={args.clip_seconds}s@{args.sample_rate}Hz "
          f"batch={args.batch_size} workers={args.num_workers}")
    print(f"{'':16}{'train':>9}{'extract':>9}{'select':>9}{'round':>9}")
    for name, t in (("without store", without), ("with store", with_store)):
        print(f"{name:16}" + "".join(f"{t[k]:8.2f}s" for k in ("train", "extract", "select",
                                                                "round")))
    print(f"filling the store once (both splits): {fill_s:.2f}s")
    print(f"ratio round without / with store = {without['round'] / with_store['round']:.1f}x  "
          "(target >= 20)")


if __name__ == "__main__":
    main()

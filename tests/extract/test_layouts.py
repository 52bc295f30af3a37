"""End to end on tiny data in every real layout: init, train, extract, consistent cache.

Together these run every encoder (resnet18 on 32-pixel images, a tiny random
BERT, the one-channel audio ResNet-18 on spectrograms, R(2+1)D-18 on 2-frame
clips, the MLP) and every fusion on the CPU with random weights.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mmal.cache import open_cache
from mmal.cache.consistency import coalition_error
from mmal.extract import extract_round
from mmal.train import train_round
from mmal.workspace import round_paths
from tests.models.tiny import make_workspace

torch.set_num_threads(1)

CASES = {
    "food101-concat": ("food101", {}, {"fusion": "concat"}, {"image": 512, "text": 16}),
    "kinetics-video-audio-sum": ("kinetics-sound", {}, {"fusion": "sum", "dropout": 0.2},
                                 {"video": 512, "audio": 512}),
    "vggsound-image-audio-concat": ("vggsound", {"visual": "image"}, {"fusion": "concat"},
                                    {"image": 512, "audio": 512}),
    "manifest-all-five-concat": ("manifest", {}, {"fusion": "concat"},
                                 {"image": 512, "text": 16, "audio": 512, "video": 512,
                                  "vector": 8}),
    "kinetics-video-audio-nl-gate": ("kinetics-sound", {}, {"fusion": "nl-gate", "dropout": 0.2},
                                     {"video": 512, "audio": 512}),
    "manifest-multilabel-jsonl-feature-sum": ("manifest",
                                              {"modalities": ("image", "text", "vector"),
                                               "multi_label": True, "manifest_format": "jsonl"},
                                              {"fusion": "feature-sum", "fused_dim": 24,
                                               "dropout": 0.2},
                                              {"image": 24, "text": 24, "vector": 24}),
}
SLOW = {"manifest-all-five-concat", "kinetics-video-audio-sum", "kinetics-video-audio-nl-gate"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c
                                  for c in CASES])
def test_train_and_extract_in_each_layout(tmp_path, case):
    layout, kwargs, model, dims = CASES[case]
    ws = make_workspace(tmp_path, layout, overrides={"model": model, "train": {"epochs": 1}},
                        **kwargs)
    metrics = train_round(ws, 0, device="cpu", progress=False)
    assert set(metrics["test"]["top1"]) == {"mm", *dims}
    mc = 2 if model.get("dropout") else 0
    path = extract_round(ws, 0, device="cpu", batch_size=4, mc_dropout=mc, progress=False)
    cache = open_cache(path)
    assert dict(zip(cache.meta.modalities, cache.meta.feature_dims, strict=True)) == dims
    assert cache.meta.fusion == model["fusion"] and cache.meta.mc_samples == mc
    if model["fusion"] == "nl-gate":  # the head input is stored: the fused logits read it
        weight, bias = cache.head()
        with h5py.File(path, "r") as f:
            h = f["head_input"][()]
            assert h.shape == (9, 512)
            np.testing.assert_allclose(f["logits/mm"][()], h @ weight.T + bias, atol=1e-4)
    # linear fusions: every coalition from the blocks and the head; nl-gate: every one it can
    assert coalition_error(cache) < 1e-4
    assert cache.num_samples == 9 and cache.num_labeled == 3
    assert np.all(np.isfinite(cache.coalitions(np.arange(9))))
    assert round_paths(ws, 0).metrics.exists()


@pytest.mark.slow
def test_nl_gate_workspace_goes_from_init_to_the_next_round(tmp_path):
    from mmal.select import select
    from mmal.workspace import next_round, read_labeled

    ws = make_workspace(tmp_path, "kinetics-sound", overrides={
        "model": {"fusion": "nl-gate"}, "train": {"epochs": 1}})
    train_round(ws, 0, device="cpu", progress=False)
    cache = extract_round(ws, 0, device="cpu", batch_size=4, progress=False)
    for strategy in ("bmmal", "badge", "coreset"):  # each reads what nl-gate stores
        chosen = select(cache, strategy, 2, seed=0)
        assert len(set(chosen.ids)) == 2
    picked = select(cache, "random", 2, seed=0)
    assert next_round(ws, picked.path) == 1
    assert len(read_labeled(ws, 1)) == 5

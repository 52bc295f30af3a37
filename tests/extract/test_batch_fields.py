"""``batch_fields``: what one batch puts in the cache, recomputed from the model's pieces.

For the linear fusions every coalition follows from the stored blocks and the
stored (effective) head; for NL-gate each coalition is the model run with the
absent modalities' layer-3 maps zeroed, and each block the gate run with that
modality alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmal.config import config_from_dict
from mmal.extract.run import batch_fields
from mmal.models import MultimodalModel
from mmal.models.nlgate import to_layer3
from tests.models.tiny import nl_gate_model

torch.set_num_threads(1)
TOL = {"float32": 1e-5, "float16": 1e-5}  # logits come from the rounded values themselves


def _vector_model(fusion: str, dims=(8, 5, 3)):
    names = ["a", "b", "c"][:len(dims)]
    config = config_from_dict({
        "dataset": {"kind": "uci-mfeat", "views": ["fac", "fou", "kar"][:len(dims)]},
        "modalities": {n: {"kind": "vector", "encoder": "mlp", "dim": d}
                       for n, d in zip(names, dims, strict=True)},
        "model": {"fusion": fusion, "dropout": 0.2}})
    torch.manual_seed(0)
    model = MultimodalModel(config, 4, {n: 6 for n in names}).eval()
    return model, {n: torch.randn(5, 6) for n in names}


def _head(model) -> tuple[np.ndarray, np.ndarray]:
    return tuple(p.detach().numpy().astype(np.float64) for p in model.effective_head())


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_sum_fields_are_means_of_the_unimodal_heads(dtype):
    model, inputs = _vector_model("sum")
    with torch.no_grad():
        out = batch_fields(model, inputs, dtype=dtype, mc_samples=2, mc_seed=3)
    names = model.modalities
    assert "head_input" not in out and out["features/a"].dtype == np.dtype(dtype)
    uni = np.stack([out[f"logits/{m}"] for m in names]).astype(np.float64)
    np.testing.assert_allclose(out["logits/mm"], uni.mean(0), atol=TOL[dtype])
    biases = [model.heads[m].bias.detach().numpy().astype(np.float64) for m in names]
    for mask in range(2 ** len(names)):
        # coalition S: (1/M) Σ_{m∈S} W_m z_m + mean_m b_m, from the unimodal logits alone
        inside = [uni[i] - biases[i] for i in range(len(names)) if mask >> i & 1]
        want = sum(inside, np.zeros_like(uni[0])) / len(names) + np.mean(biases, axis=0)
        np.testing.assert_allclose(out["coalitions"][:, mask], want, atol=TOL[dtype])
    assert out["mc_logits"].shape == (5, 2, 4)


@pytest.mark.parametrize("fusion", ["concat", "sum", "feature-sum"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_linear_coalitions_follow_from_the_stored_blocks_and_head(fusion, dtype):
    model, inputs = _vector_model(fusion, dims=(6, 6, 4) if fusion == "feature-sum" else (8, 5, 3))
    with torch.no_grad():
        out = batch_fields(model, inputs, dtype=dtype)
    w, b = _head(model)
    z = [out[f"features/{m}"].astype(np.float64) for m in model.modalities]
    assert [x.shape[1] for x in z] == model.feature_dims and w.shape[1] == model.fused_dim
    for mask in range(2 ** len(z)):
        kept = [x if mask >> i & 1 else np.zeros_like(x) for i, x in enumerate(z)]
        h = sum(kept) if fusion == "feature-sum" else np.concatenate(kept, axis=1)
        np.testing.assert_allclose(out["coalitions"][:, mask], h @ w.T + b, atol=TOL[dtype])
    np.testing.assert_array_equal(out["logits/mm"], out["coalitions"][:, -1])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nl_gate_coalitions_and_blocks_rerun_the_gate_with_maps_zeroed(dtype):
    model, inputs = nl_gate_model(dropout=0.3)
    with torch.no_grad():
        out = batch_fields(model, inputs, dtype=dtype, mc_samples=4, mc_seed=1)
        maps = {m: to_layer3(model.encoders[m], inputs[m]) for m in ("clip", "sound")}
        branch = model.fused_branch

        def fused(keep):  # the fused 512-d feature, absent modalities' layer-3 maps zeroed
            v, a = (maps[m] if keep[m] else torch.zeros_like(maps[m]) for m in ("clip", "sound"))
            return branch.fc(torch.flatten(branch.pool(branch.layer4(branch.gate(v, a))), 1))

        coalitions = {mask: fused({"clip": bool(mask & 1), "sound": bool(mask & 2)})
                      for mask in range(4)}
        uni = {m: model.heads[m](model.encoders[m](inputs[m])) for m in ("clip", "sound")}
    tol = 1e-5 if dtype == "float32" else 2e-3  # float16 rounding of the fused features
    w, b = _head(model)
    assert out["head_input"].shape == (3, 512) and out["head_input"].dtype == np.dtype(dtype)
    assert [out[f"features/{m}"].shape for m in ("clip", "sound")] == [(3, 512)] * 2
    for mask, h in coalitions.items():
        np.testing.assert_allclose(out["coalitions"][:, mask], h.double().numpy() @ w.T + b,
                                   atol=tol, rtol=tol)
    # the blocks: the gate run with that modality alone; the head input: with both
    np.testing.assert_allclose(out["features/clip"], coalitions[1].numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(out["features/sound"], coalitions[2].numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(out["head_input"], coalitions[3].numpy(), atol=tol, rtol=tol)
    for m in ("clip", "sound"):
        np.testing.assert_allclose(out[f"logits/{m}"], uni[m].numpy(), atol=1e-5)
    # self-consistent in the stored dtype: the fused logits are the head of what is stored
    stored = {k: out[k].astype(np.float64) for k in ("features/clip", "features/sound",
                                                     "head_input")}
    np.testing.assert_allclose(out["coalitions"][:, 1], stored["features/clip"] @ w.T + b, atol=1e-5)
    np.testing.assert_allclose(out["coalitions"][:, 2], stored["features/sound"] @ w.T + b,
                               atol=1e-5)
    np.testing.assert_allclose(out["logits/mm"], stored["head_input"] @ w.T + b, atol=1e-5)
    np.testing.assert_array_equal(out["logits/mm"], out["coalitions"][:, 3])
    assert out["mc_logits"].shape == (3, 4, 3) and not np.allclose(out["mc_logits"][:, 0],
                                                                    out["mc_logits"][:, 1])

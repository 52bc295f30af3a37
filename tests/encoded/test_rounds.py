"""Rounds with frozen encoders: the pool is encoded once per workspace; later rounds read the store.

And the same model: heads trained from stored features match heads trained
with the frozen encoder recomputed every epoch (same seed, no augmentation).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torchvision.models.resnet import ResNet

from mmal.cache import open_cache
from mmal.data import loaders
from mmal.extract import extract_round
from mmal.select import select
from mmal.train import train_round
from mmal.workspace import encoded_path, next_round, open_round
from tests.encoded.frozen import frozen_workspace

torch.set_num_threads(1)


def _round(ws, r, **kw):
    rnd = open_round(ws, r)
    train_round(rnd, device="cpu", progress=False, **kw)
    extract_round(rnd, device="cpu", progress=False, **kw)
    return rnd


def _forbid(monkeypatch, what: str):
    def boom(*args, **kwargs):
        raise AssertionError(f"{what} ran in a round that should read the store")
    return boom


def test_the_pool_is_encoded_once_and_later_rounds_neither_decode_nor_run_encoders(
        tmp_path, monkeypatch, calls):
    ws = frozen_workspace(tmp_path)
    r0 = _round(ws, 0)
    # both splits of both modalities, once, though train and extract each asked for them
    assert sorted(calls) == [("audio", "test"), ("audio", "train"), ("image", "test"),
                             ("image", "train")]
    for split, n in (("train", 12), ("test", 4)):
        with h5py.File(encoded_path(ws, split, "image"), "r") as f:
            assert f.attrs["mmal_type"] == "mmal-encoded-features"
            assert f["features"].shape == (n, 512)
    selection = select(r0.paths.cache, "random", 3, seed=0).path
    next_round(r0, selection)

    # round 1: no media decoded, no ResNet forward pass, no store computed
    for name in ("load_image", "load_audio"):
        monkeypatch.setattr(loaders, name, _forbid(monkeypatch, name))
    monkeypatch.setattr(ResNet, "forward", _forbid(monkeypatch, "a ResNet encoder"))
    calls.clear()
    r1 = _round(ws, 1)
    assert calls == []
    with open_cache(r1.paths.cache) as cache:
        assert len(cache.ids) == 12 and cache.num_labeled == 9
    # the checkpoint is still the whole model, frozen encoder weights included
    state = torch.load(r1.paths.model, weights_only=True)["state_dict"]
    assert any(k.startswith("encoders.image.") for k in state)
    assert any(k.startswith("encoders.audio.") for k in state)


@pytest.mark.parametrize("frozen", [("image", "audio"), ("image",)],
                         ids=["both-frozen", "mixed"])
def test_heads_trained_from_stored_features_match_recomputed_encoders(tmp_path, frozen):
    ws = frozen_workspace(tmp_path, frozen=frozen, overrides={"model": {"dropout": 0.2}})
    rnd = open_round(ws, 0)
    recomputed = train_round(rnd, device="cpu", progress=False, store=False)
    assert not encoded_path(ws, "train", "image").exists()
    before = torch.load(rnd.paths.model, weights_only=True)["state_dict"]
    stored = train_round(rnd, device="cpu", progress=False, force=True)
    assert encoded_path(ws, "train", "image").exists()
    after = torch.load(rnd.paths.model, weights_only=True)["state_dict"]
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=1e-4, atol=1e-5, msg=key)
    np.testing.assert_allclose(stored["train_loss"], recomputed["train_loss"], rtol=1e-5)
    assert stored["test"]["top1"] == recomputed["test"]["top1"]

    # extraction over stored features writes the cache a full forward pass writes
    extract_round(rnd, device="cpu", progress=False, store=False)
    with open_cache(rnd.paths.cache) as cache:
        full = {k: cache.features(k) for k in cache.meta.modalities}
        coalitions = cache.coalitions()
    extract_round(rnd, device="cpu", progress=False, force=True)
    with open_cache(rnd.paths.cache) as cache:
        for k, v in full.items():
            np.testing.assert_allclose(cache.features(k), v, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(cache.coalitions(), coalitions, rtol=1e-4, atol=1e-5)


def test_no_store_flag_runs_the_encoders_and_writes_no_store(tmp_path):
    from click.testing import CliRunner

    from mmal.cli import cli

    ws = frozen_workspace(tmp_path, frozen=("image",), n_train=6, n_test=2)
    runner = CliRunner()
    for command in ("train", "extract"):
        done = runner.invoke(cli, [command, "--workspace", str(ws), "--device", "cpu", "-q",
                                   "--no-store"])
        assert done.exit_code == 0, done.output
    assert not (ws / "encoded").exists()
    done = runner.invoke(cli, ["extract", "--workspace", str(ws), "--device", "cpu", "-q",
                               "--force"])
    assert done.exit_code == 0, done.output
    assert encoded_path(ws, "train", "image").is_file()
    assert not encoded_path(ws, "test", "image").exists()  # extraction reads the pool only


def test_training_digests_each_frozen_encoder_once(tmp_path, monkeypatch):
    """The resume check and the store key share one digest: reading every weight once, not twice."""
    import mmal.encoded.encode as encode_module
    import mmal.train.loop as loop_module

    ws = frozen_workspace(tmp_path, frozen=("image",), n_train=6, n_test=2)
    seen: list[int] = []
    real = encode_module.weights_digest

    def counting(module):
        seen.append(id(module))
        return real(module)

    monkeypatch.setattr(encode_module, "weights_digest", counting)
    monkeypatch.setattr(loop_module, "weights_digest", counting)
    train_round(open_round(ws, 0), device="cpu", progress=False)
    assert len(seen) == 1

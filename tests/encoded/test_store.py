"""The encoder-output store: reuse, invalidation, crash safety, one computation for two processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmal.config import dump_config, load_config
from mmal.encoded import load_or_encode, read_store, stored_modalities, write_store
from mmal.errors import CacheError
from mmal.models import build_model
from mmal.stamp import ENCODED, stamp
from mmal.workspace import CONFIG_NAME, encoded_path, open_round
from tests.encoded.frozen import frozen_workspace, save_weights

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws(tmp_path):
    return frozen_workspace(tmp_path, frozen=("image",), n_train=6, n_test=2)


def _load(ws, split="train", seed=0):
    """What a round of ``ws`` gets from the store for ``split`` (fresh model, as train builds it)."""
    rnd = open_round(ws, 0)
    torch.manual_seed(seed)
    model = build_model(rnd.config, rnd.pool("train"))
    return load_or_encode(model, rnd.config, [rnd.pool(split)], rnd.encoded,
                          torch.device("cpu"))[split]


def _edit_config(ws, change):
    path = ws / CONFIG_NAME
    config = load_config(path)
    path.write_text(dump_config(change(config)), encoding="utf-8")


def _image(config, **changes):
    mods = tuple(dataclasses.replace(m, **changes) if m.name == "image" else m
                 for m in config.modalities)
    return dataclasses.replace(config, modalities=mods)


def test_stored_once_then_read_back_as_computed(ws, calls):
    first = _load(ws)
    assert list(first) == ["image"] and first["image"].shape == (6, 512)
    again = _load(ws, seed=5)  # another round's random heads: same frozen weights
    assert calls == [("image", "train")]
    np.testing.assert_array_equal(again["image"], first["image"])
    features, ids = read_store(encoded_path(ws, "train", "image"))
    np.testing.assert_array_equal(features, first["image"])
    np.testing.assert_array_equal(ids, open_round(ws, 0).pool("train").ids)


def test_new_encoder_weights_recompute(ws, calls, tmp_path):
    first = _load(ws)
    weights = save_weights(tmp_path / "weights" / "other.pt", "image", seed=9)
    _edit_config(ws, lambda c: _image(c, pretrained=str(weights)))
    second = _load(ws)
    assert calls == [("image", "train")] * 2
    assert not np.allclose(second["image"], first["image"])


def test_a_changed_modality_option_recomputes(ws, calls):
    _load(ws)
    _edit_config(ws, lambda c: _image(c, options={**c.modalities[0].options, "image_size": 48}))
    _load(ws)
    assert calls == [("image", "train")] * 2


def test_a_media_file_rewritten_in_place_recomputes(ws, calls):
    first = _load(ws)
    pool = open_round(ws, 0).pool("train")
    image = pool.records["image"][0]
    other = pool.records["image"][1].read_bytes()
    image.write_bytes(other)  # same name, new content
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = _load(ws)
    assert calls == [("image", "train")] * 2
    assert not np.allclose(second["image"][0], first["image"][0])


def test_a_file_of_another_modality_does_not_recompute(ws, calls):
    _load(ws)
    audio = open_round(ws, 0).pool("train").records["audio"][0]
    os.utime(audio, ns=(time.time_ns(), time.time_ns() + 10**9))
    _load(ws)
    assert calls == [("image", "train")]


def test_unfrozen_and_nl_gate_models_store_nothing(ws):
    config = open_round(ws, 0).config
    assert stored_modalities(config) == ["image"]
    assert stored_modalities(_image(config, freeze=False)) == []
    nl_gate = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                    fusion="nl-gate"))
    assert stored_modalities(nl_gate) == []


# -- crash safety ----------------------------------------------------------------------------------
def test_a_failed_write_leaves_neither_a_store_nor_a_temporary_file(ws, monkeypatch):
    path = encoded_path(ws, "train", "image")

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    with pytest.raises(CacheError, match=f"^{path}: cannot be written \\(No space left on device\\)"):
        _load(ws)
    assert list(path.parent.iterdir()) == [path.parent / ".image.h5.lock"]


def test_a_killed_writer_leaves_only_a_temporary_file_that_the_next_run_replaces(ws, calls):
    path = encoded_path(ws, "train", "image")
    code = textwrap.dedent(f"""
        import os, h5py
        import mmal.encoded.store as store
        def die(*a, **k):
            os._exit(9)  # killed in the middle of writing the features
        h5py.Group.create_dataset = die
        store.write_store({str(path)!r}, __import__("numpy").zeros((6, 512)), list(range(6)),
                          modality="image", split="train", fingerprint="x")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 9
    assert not path.exists() and len(list(path.parent.glob(".image.h5.*.tmp"))) == 1
    _load(ws)
    assert calls == [("image", "train")] and path.exists()
    assert list(path.parent.glob(".image.h5.*.tmp")) == []  # the dead writer's file is gone


def test_a_damaged_store_is_computed_again(ws, calls):
    first = _load(ws)
    path = encoded_path(ws, "train", "image")
    with h5py.File(path, "r") as f:
        chunk = f["features"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    start = chunk.byte_offset + 100
    data[start:start + 1000] = bytes(1000)  # zero a block inside the features' first chunk
    path.write_bytes(bytes(data))
    second = _load(ws)
    assert calls == [("image", "train")] * 2
    np.testing.assert_allclose(second["image"], first["image"], rtol=1e-5, atol=1e-6)


def test_a_newer_store_is_refused_with_upgrade_mmal(tmp_path):
    path = tmp_path / "image.h5"
    write_store(path, np.zeros((2, 3)), np.arange(2), modality="image", split="train",
                fingerprint="k")
    with h5py.File(path, "a") as f:
        f.attrs.update(stamp(ENCODED, 2))
    with pytest.raises(CacheError, match=f"^{path}: schema version 2 is newer .* upgrade mmal$"):
        read_store(path, "k")


def test_a_store_reads_back_what_was_written_and_refuses_another_fingerprint(tmp_path):
    path = tmp_path / "image.h5"
    features = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_store(path, features, np.array([7, 9]), modality="image", split="train",
                fingerprint="k")
    got, ids = read_store(path, "k")
    np.testing.assert_array_equal(got, features)
    np.testing.assert_array_equal(ids, [7, 9])
    assert read_store(path, "other") is None
    assert read_store(tmp_path / "absent.h5") is None


def test_an_empty_split_stores_an_empty_array(tmp_path):
    path = tmp_path / "e.h5"
    write_store(path, np.zeros((0, 4)), np.zeros(0), modality="m", split="test", fingerprint="k")
    assert read_store(path, "k")[0].shape == (0, 4)


# -- concurrency -----------------------------------------------------------------------------------
def test_two_processes_starting_together_compute_the_store_once(ws, tmp_path):
    log = tmp_path / "computed.log"
    code = textwrap.dedent(f"""
        import time, torch
        import mmal.encoded.encode as enc
        from mmal.models import build_model
        from mmal.workspace import open_round
        real = enc.encode_split
        def slow(*a, **k):
            with open({str(log)!r}, "a") as fh:
                fh.write("computed\\n")
            time.sleep(1.0)  # the other process arrives while this one computes
            return real(*a, **k)
        enc.encode_split = slow
        rnd = open_round({str(ws)!r}, 0)
        torch.manual_seed(0)
        model = build_model(rnd.config, rnd.pool("train"))
        out = enc.load_or_encode(model, rnd.config, [rnd.pool("train")], rnd.encoded,
                                 torch.device("cpu"))
        print(float(out["train"]["image"].sum()))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert log.read_text() == "computed\n"
    assert outs[0][0] == outs[1][0]



def test_workspaces_inside_a_workspace_share_its_store(ws, calls):
    from mmal.workspace import init_workspace

    _load(ws)
    nested = init_workspace(ws / "runs" / "random" / "seed0", ws / CONFIG_NAME)
    assert encoded_path(nested, "train", "image") == encoded_path(ws, "train", "image").resolve()
    _load(nested)
    assert calls == [("image", "train")]
    assert not (nested / "encoded").exists()


def test_a_frozen_text_encoder_is_stored_and_trained_on(tmp_path, calls):
    from mmal.extract import extract_round
    from mmal.train import train_round
    from tests.models.tiny import make_workspace

    ws = make_workspace(tmp_path, "manifest", modalities=("text", "vector"), n_train=6,
                        n_test=2, overrides={"modalities.text": {"freeze": True},
                                             "train": {"augment": False},
                                             "al": {"initial_budget": 4}})
    train_round(ws, 0, device="cpu", progress=False)
    extract_round(ws, 0, device="cpu", progress=False)
    assert calls == [("text", "train"), ("text", "test")]
    features, _ = read_store(encoded_path(ws, "train", "text"))
    assert features.shape == (6, 16)  # the tiny BERT's hidden size

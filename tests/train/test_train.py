"""``train_round`` on the built-in UCI data: outputs, determinism, resume after a kill, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

from mmal.cli import cli
from mmal.errors import ConfigError, DataError, WorkspaceError
from mmal.fingerprint import file_fingerprint
from mmal.stamp import STAMP_KEYS
from mmal.train import train_round
from mmal.workspace import round_paths
from tests.models.tiny import make_workspace

torch.set_num_threads(1)
UCI = {"train": {"epochs": 3, "batch_size": 16}, "al": {"initial_budget": 40},
       "model": {"dropout": 0.2}}


@pytest.fixture
def uci_ws(tmp_path):
    return make_workspace(tmp_path, "uci", overrides=UCI)


def _state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_writes_a_weights_only_checkpoint_and_metrics(uci_ws):
    metrics = train_round(uci_ws, 0, device="cpu", progress=False)
    paths = round_paths(uci_ws, 0)
    ckpt = torch.load(paths.model, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["num_labeled"] == 40 and ckpt["num_classes"] == 10
    assert not paths.model.with_name("model.pt.partial").exists()
    on_disk = json.loads(paths.metrics.read_text())
    assert on_disk["mmal_type"] == "mmal-metrics" and on_disk["schema_version"] == 1
    assert ckpt["mmal_type"] == "mmal-model" and ckpt["schema_version"] == 2
    assert {k: v for k, v in on_disk.items() if k not in STAMP_KEYS} == metrics
    assert metrics["model_fingerprint"] == file_fingerprint(paths.model)
    assert len(metrics["train_loss"]) == 3 and metrics["train_loss"][-1] < metrics["train_loss"][0]
    test = metrics["test"]
    assert test["samples"] == 400 and set(test["top1"]) == {"mm", "fac", "fou"}
    assert all(0 <= v <= 1 for v in test["top1"].values())
    shares = test["shapley_true_class"]["contribution_mean"]
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("train,fou,want", [
    ({}, {}, [1e-3, 1e-3]), ({"encoder_lr": 5e-4}, {}, [5e-4, 5e-4]),
    ({"encoder_lr": 5e-4}, {"lr": 2e-5}, [5e-4, 2e-5]),  # a modality's own rate wins
])
def test_encoders_trained_from_scratch_learn_at_lr_unless_encoder_lr_is_set(tmp_path, monkeypatch,
                                                                            train, fou, want):
    """encoder_lr defaulted to 1e-4, a tenth of lr, for the MLPs that start from random weights."""
    import mmal.train.loop as loop

    seen = []
    real = loop._optimizer
    monkeypatch.setattr(loop, "_optimizer", lambda name, groups, betas: seen.append(groups) or
                        real(name, groups, betas))
    ws = make_workspace(tmp_path, "uci", overrides={**UCI, "modalities.fou": fou,
                                                    "train": {**UCI["train"], "epochs": 1,
                                                              "lr": 1e-3, **train}})
    train_round(ws, 0, device="cpu", progress=False)
    (groups,) = seen
    # the heads, then one group per encoder rate in modality order (fac, fou)
    assert [g["lr"] for g in groups] == [1e-3, *dict.fromkeys(want)]


def test_same_seed_same_model_and_existing_model_needs_force(uci_ws):
    train_round(uci_ws, 0, device="cpu", progress=False)
    first = _state(round_paths(uci_ws, 0).model)
    with pytest.raises(WorkspaceError, match="model.pt: already exists; pass --force"):
        train_round(uci_ws, 0, device="cpu", progress=False)
    train_round(uci_ws, 0, device="cpu", progress=False, force=True)
    second = _state(round_paths(uci_ws, 0).model)
    assert all(torch.equal(first[k], second[k]) for k in first)


def _brute_force_eq1(logits: list[list[list[float]]], labels) -> float:
    """Mean over samples of the mean over heads of -log p(label) (BCE averaged over classes)."""
    per_sample = []
    for i, y in enumerate(labels):
        heads = []
        for head in logits:
            z = head[i]
            if isinstance(y, list):  # multi-label: binary cross-entropy per class
                heads.append(sum(-math.log(1 / (1 + math.exp(-v))) if t else
                                 -math.log(1 - 1 / (1 + math.exp(-v)))
                                 for v, t in zip(z, y, strict=True)) / len(z))
            else:
                heads.append(-math.log(math.exp(z[y]) / sum(math.exp(v) for v in z)))
        per_sample.append(sum(heads) / len(heads))
    return sum(per_sample) / len(per_sample)


@pytest.mark.parametrize("multi_label", [False, True])
def test_multimodal_loss_is_eq1_against_brute_force(multi_label):
    from mmal.models.model import Encoded, Output
    from mmal.train.loop import multimodal_loss

    gen = torch.Generator().manual_seed(3)
    b, k = 7, 5
    mm, a, v = (torch.randn(b, k, generator=gen, dtype=torch.float64) * 2 for _ in range(3))
    labels = ((torch.rand(b, k, generator=gen) > 0.5).to(torch.int8) if multi_label
              else torch.randint(0, k, (b,), generator=gen))
    out = Output(encoded=Encoded({}), logits_mm=mm, logits_uni={"a": a, "v": v})
    got = multimodal_loss(out, labels, ["a", "v"])
    want = _brute_force_eq1([t.tolist() for t in (mm, a, v)], labels.tolist())
    assert float(got) == pytest.approx(want, rel=1e-12)


KILL = textwrap.dedent("""
    import os, signal, sys
    import torch
    import mmal.train.loop as loop
    torch.set_num_threads(1)
    calls, stop = [0], int(sys.argv[2])
    real = loop.head_losses
    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == stop:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    loop.head_losses = dying
    loop.train_round(sys.argv[1], 0, device="cpu", progress=False)
""")


@pytest.mark.parametrize("kills,finished", [([5], 1),
                                             pytest.param([4, 5], 2, marks=pytest.mark.slow)])
def test_killed_training_resumes_to_the_uninterrupted_model(uci_ws, tmp_path, request, kills,
                                                            finished):
    # 40 samples in batches of 16: 3 steps per epoch. Each kill stops at the given step
    # counted from where that process started: [4, 5] dies in epoch 2, then in epoch 3.
    for stop in kills:
        proc = subprocess.run([sys.executable, "-c", KILL, str(uci_ws), str(stop)],
                              capture_output=True, text=True, cwd=str(request.config.rootpath))
        assert proc.returncode == -9, proc.stderr
        assert not round_paths(uci_ws, 0).model.exists()
        assert not round_paths(uci_ws, 0).metrics.exists()
    partial = round_paths(uci_ws, 0).model.with_name("model.pt.partial")
    assert torch.load(partial, weights_only=True)["epoch"] == finished
    resumed = train_round(uci_ws, 0, device="cpu", progress=False)
    reference_ws = make_workspace(tmp_path / "ref", "uci", overrides=UCI)
    reference = train_round(reference_ws, 0, device="cpu", progress=False)
    a, b = _state(round_paths(uci_ws, 0).model), _state(round_paths(reference_ws, 0).model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == reference["test"]
    assert resumed["train_loss"] == reference["train_loss"]


@pytest.mark.slow
def test_partial_of_another_config_is_not_resumed(uci_ws, request):
    proc = subprocess.run([sys.executable, "-c", KILL, str(uci_ws), "5"],
                          capture_output=True, text=True, cwd=str(request.config.rootpath))
    assert proc.returncode == -9
    toml = uci_ws / "mmal.toml"
    toml.write_text(toml.read_text().replace("epochs = 3", "epochs = 2"))
    metrics = train_round(uci_ws, 0, device="cpu", progress=False)
    assert len(metrics["train_loss"]) == 2


def test_multi_label_manifest_reports_map(tmp_path):
    ws = make_workspace(tmp_path, "manifest", modalities=("vector", "text"), multi_label=True,
                        n_train=12, n_test=6, overrides={"al": {"initial_budget": 8}})
    metrics = train_round(ws, 0, device="cpu", progress=False)
    test = metrics["test"]
    assert set(test["map"]) == {"mm", "vector", "text"}
    assert all(0 <= v <= 1 for v in test["map"].values())


def test_frozen_encoder_keeps_its_initial_weights(tmp_path):
    ws = make_workspace(tmp_path, "uci", overrides={**UCI, "modalities.fac": {"freeze": True}})
    train_round(ws, 0, device="cpu", progress=False)
    trained = _state(round_paths(ws, 0).model)
    from mmal.data import load_pool
    from mmal.models import build_model
    from mmal.seeds import derive_seed
    from mmal.workspace import load_workspace_config

    config = load_workspace_config(ws)
    torch.manual_seed(derive_seed(config.al.seed, 0, 0))
    initial = build_model(config, load_pool(config, "train")).state_dict()
    fac = [k for k in initial if k.startswith("encoders.fac.")]
    fou = [k for k in initial if k.startswith("encoders.fou.")]
    assert fac and all(torch.equal(initial[k], trained[k]) for k in fac)
    assert not all(torch.equal(initial[k], trained[k]) for k in fou)


def test_missing_sample_file_is_named_and_nothing_is_written(tmp_path):
    ws = make_workspace(tmp_path, "manifest", modalities=("vector", "image"))
    from mmal.workspace import read_labeled

    victim = int(read_labeled(ws, 0)[0])
    (tmp_path / "data" / "files" / f"{victim}.{'png' if victim % 2 else 'jpg'}").write_bytes(b"xx")
    with pytest.raises(DataError, match=f"sample {victim}: cannot read image"):
        train_round(ws, 0, device="cpu", progress=False)
    assert not round_paths(ws, 0).model.exists() and not round_paths(ws, 0).metrics.exists()


@pytest.mark.parametrize("edit,message", [
    (("encoder = \"mlp\"", "encoder = \"resnet7\"", 1), "modalities.fac.encoder"),
    (("[train]", "[train]\nbogus = 1", 1), "bogus"),
])
def test_bad_config_is_one_line_cli_error_and_nothing_written(uci_ws, edit, message):
    toml = uci_ws / "mmal.toml"
    toml.write_text(toml.read_text().replace(*edit))
    result = CliRunner().invoke(cli, ["train", "--workspace", str(uci_ws), "--device", "cpu", "-q"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert message in result.output
    assert not round_paths(uci_ws, 0).model.exists()


def test_cli_trains_the_latest_round(uci_ws):
    result = CliRunner().invoke(cli, ["train", "--workspace", str(uci_ws), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "test top-1: mm" in result.output and "round 000" in result.output
    assert round_paths(uci_ws, 0).model.exists()


def test_cuda_without_gpu_is_a_config_error(uci_ws):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="--device cuda"):
        train_round(uci_ws, 0, device="cuda", progress=False)


def test_partial_checkpoint_is_not_resumed_after_a_labeled_sample_is_relabeled(uci_ws, monkeypatch,
                                                                             tmp_path, caplog):
    from mmal.annotation import import_labels
    from mmal.data import load_pool
    from mmal.workspace import load_workspace_config, read_labeled

    partial = _interrupt_in_epoch_2(uci_ws, monkeypatch)
    assert torch.load(partial, weights_only=True)["epoch"] == 1

    pool = load_pool(load_workspace_config(uci_ws), "train")
    first = int(read_labeled(uci_ws, 0)[0])
    now = pool.class_names[int(pool.labels[pool.rows([first])[0]])]
    other = next(c for c in pool.class_names if c != now)
    (tmp_path / "fix.csv").write_text(f"id,label\n{first},{other}\n")
    import_labels(uci_ws, 0, tmp_path / "fix.csv")  # an annotator corrects one label
    with caplog.at_level("INFO", logger="mmal.train.loop"):
        train_round(uci_ws, 0, device="cpu", progress=False)
    assert "labels; training from scratch" in caplog.text and "resuming" not in caplog.text


def test_bad_image_in_a_loader_worker_is_one_line_in_the_cli(tmp_path):
    from mmal.workspace import load_workspace_config, read_labeled

    ws = make_workspace(tmp_path, "manifest", modalities=("image", "vector"), n_train=8,
                        n_test=4, overrides={"al": {"initial_budget": 4},
                                             "train": {"num_workers": 1, "epochs": 1}})
    root = load_workspace_config(ws).dataset.root
    bad = int(read_labeled(ws, 0)[0])
    image = next(p for p in (root / "files").glob(f"{bad}.*") if p.suffix in (".png", ".jpg"))
    image.write_bytes(b"not an image")
    result = CliRunner().invoke(cli, ["train", "--workspace", str(ws), "--device", "cpu", "-q"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: sample {bad}: cannot read image {image}")
    assert len(result.output.splitlines()) == 1
    assert "Traceback" not in result.output and "worker" not in result.output


def test_nan_or_misshapen_vectors_are_named_and_no_model_is_written(tmp_path):
    import numpy as np

    from mmal.workspace import load_workspace_config, read_labeled

    ws = make_workspace(tmp_path, "manifest", modalities=("vector",), n_train=8, n_test=4,
                        overrides={"al": {"initial_budget": 4}, "train": {"epochs": 1}})
    files = load_workspace_config(ws).dataset.root / "files"
    bad = int(read_labeled(ws, 0)[-1])
    vector = np.load(files / f"{bad}.npy")
    np.save(files / f"{bad}.npy", np.append(vector, 1.0).astype(np.float32))
    with pytest.raises(DataError, match=rf"sample {bad}: vector .*{bad}.npy has {vector.size + 1} "
                                        rf"values, but this split's vectors have {vector.size}"):
        train_round(ws, 0, device="cpu", progress=False)
    vector[0] = np.nan
    np.save(files / f"{bad}.npy", vector)
    with pytest.raises(DataError, match=rf"sample {bad}: vector .*{bad}.npy holds NaN or Inf"):
        train_round(ws, 0, device="cpu", progress=False)
    assert not round_paths(ws, 0).model.exists()


def test_a_diverging_loss_stops_training_naming_the_batch(uci_ws):
    from mmal.errors import TrainingError

    toml = uci_ws / "mmal.toml"
    toml.write_text(toml.read_text().replace("lr = 0.001", "lr = 1e30", 1))
    with pytest.raises(TrainingError, match=r"round 000 epoch \d/3: the training loss is (nan|inf)"
                                            r" on the batch of sample ids \d+"):
        train_round(uci_ws, 0, device="cpu", progress=False)
    assert not round_paths(uci_ws, 0).model.exists()


def test_a_single_labeled_sample_is_refused_before_training(tmp_path):
    from mmal.cache.index import write_index
    from mmal.errors import TrainingError
    from mmal.workspace import read_labeled

    ws = make_workspace(tmp_path, "manifest", modalities=("image", "vector"), n_train=6, n_test=3,
                        overrides={"al": {"initial_budget": 2}, "train": {"epochs": 1},
                                   "modalities.image": {"image_size": 32}})
    labeled = round_paths(ws, 0).labeled
    write_index(labeled, read_labeled(ws, 0)[:1], kind="labeled", provenance={"round": 0},
                overwrite=True)
    with pytest.raises(TrainingError, match=r"round 000 has 1 labeled sample; training needs at "
                                            r"least 2"):
        train_round(ws, 0, device="cpu", progress=False)


def test_test_split_vectors_of_another_width_are_refused_before_training(tmp_path):
    import numpy as np

    from mmal.data import load_pool
    from mmal.workspace import load_workspace_config

    ws = make_workspace(tmp_path, "manifest", modalities=("vector",), n_train=8, n_test=4,
                        overrides={"al": {"initial_budget": 4}, "train": {"epochs": 1}})
    config = load_workspace_config(ws)
    test = load_pool(config, "test")
    for path in test.records["vector"]:
        np.save(path, np.append(np.load(path), 1.0).astype(np.float32))
    with pytest.raises(DataError) as info:
        train_round(ws, 0, device="cpu", progress=False)
    width = np.load(load_pool(config, "train").records["vector"][0]).size
    assert str(info.value) == (f"{test.origin}: modality 'vector' has vectors of {width + 1} "
                               f"values, but the train split's have {width} (the model's input); "
                               "save both splits' vectors with the same width")
    assert not round_paths(ws, 0).model.with_name("model.pt.partial").exists()


class _Payload:
    """A pickle that would create a file when unpickled (it must never run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("weights,error", [
    ("payload", "torch will not load its pytorch_model.bin safely (a pickle holding more than "
                "tensors, or a damaged file), and mmal never unpickles code; if you trust the "
                "file, convert it to model.safetensors yourself (torch.load with "
                "weights_only=False, then safetensors.torch.save_file), else use other weights"),
    ("empty", "cannot load the local text model (EOFError); replace the damaged file, or point "
              "it at another model folder"),
])
def test_unsafe_or_damaged_text_weights_are_one_line_and_never_unpickled(tmp_path, weights,
                                                                         error):
    import pickle

    ws = make_workspace(tmp_path, "manifest", modalities=["text"])
    bert = tmp_path / "tiny-bert"
    marker = tmp_path / "payload-ran"
    data = pickle.dumps({"w": _Payload(marker)}, protocol=2) if weights == "payload" else b""
    (bert / "pytorch_model.bin").write_bytes(data)
    result = CliRunner().invoke(cli, ["train", "--workspace", str(ws), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output == f"Error: key 'modalities.text.pretrained' is {str(bert)!r}: {error}\n"
    assert not marker.exists() and not round_paths(ws, 0).model.exists()


def _interrupt_in_epoch_2(ws, monkeypatch):
    import mmal.train.loop as loop

    real, calls = loop.head_losses, [0]

    def stop(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:  # 3 steps per epoch: the second step of epoch 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "head_losses", stop)
    with pytest.raises(KeyboardInterrupt):
        train_round(ws, 0, device="cpu", progress=False)
    monkeypatch.setattr(loop, "head_losses", real)
    return round_paths(ws, 0).model.with_name("model.pt.partial")


FROZEN_FAC = {**UCI, "modalities.fac": {"freeze": True}}


def test_partial_checkpoints_leave_frozen_weights_out_and_resume_to_the_same_model(
        tmp_path, monkeypatch):
    ws = make_workspace(tmp_path, "uci", overrides=FROZEN_FAC)
    partial = _interrupt_in_epoch_2(ws, monkeypatch)
    ckpt = torch.load(partial, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["frozen_weights"]
    assert not any(k.startswith("encoders.fac.") for k in ckpt["state_dict"])
    assert any(k.startswith("encoders.fou.") for k in ckpt["state_dict"])
    resumed = train_round(ws, 0, device="cpu", progress=False)
    reference_ws = make_workspace(tmp_path / "ref", "uci", overrides=FROZEN_FAC)
    reference = train_round(reference_ws, 0, device="cpu", progress=False)
    a, b = _state(round_paths(ws, 0).model), _state(round_paths(reference_ws, 0).model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["train_loss"] == reference["train_loss"]


def test_partial_trained_with_other_frozen_weights_is_not_resumed(tmp_path, monkeypatch, caplog):
    ws = make_workspace(tmp_path, "uci", overrides=FROZEN_FAC)
    partial = _interrupt_in_epoch_2(ws, monkeypatch)
    ckpt = torch.load(partial, weights_only=True)
    torch.save({**ckpt, "frozen_weights": "0" * 64}, partial)
    with caplog.at_level("WARNING"):
        metrics = train_round(ws, 0, device="cpu", progress=False)
    assert "frozen encoder weights or labels; training from scratch" in caplog.text
    assert "resuming" not in caplog.text
    assert len(metrics["train_loss"]) == 3

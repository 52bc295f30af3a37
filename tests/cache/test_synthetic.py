"""Synthetic caches are valid and self-consistent (coalitions from head and features)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mmal.cache import open_cache
from mmal.cache.consistency import coalition_error
from mmal.cache.synthetic import make_synthetic_cache
from mmal.cache.writer import CacheWriter, content_fingerprint

LINEAR_CASES = [("concat", (12, 7)), ("feature-sum", (9, 9)), ("sum", (9, 4)),
                ("concat", (5, 4, 3)), ("feature-sum", (6, 6, 6)), ("sum", (5, 4, 3))]


@pytest.mark.parametrize("fusion,dims", LINEAR_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_coalitions_match_head_and_features(tmp_path, fusion, dims, dtype):
    path = make_synthetic_cache(tmp_path / "s.h5", num_samples=300, num_classes=7,
                                feature_dims=dims, fusion=fusion, feature_dtype=dtype,
                                batch_rows=64, seed=4)
    with open_cache(path) as cache:
        assert coalition_error(cache) < 1e-4
        # the empty coalition is the bias alone, the full one the multimodal logits
        _, bias = cache.head()
        coal = cache.coalitions()
        np.testing.assert_allclose(coal[:, 0], np.broadcast_to(bias, coal[:, 0].shape), atol=1e-6)
        np.testing.assert_allclose(coal[:, -1], cache.logits("mm"), atol=1e-5)


@pytest.mark.parametrize("dims", [(6, 6), (3, 3, 3)])
def test_sum_fusion_is_the_mean_of_the_unimodal_heads(tmp_path, dims):
    """The paper's summation: logits/mm = (1/M) Σ_m logits/m, with [W_1, ..., W_M] / M stored."""
    path = make_synthetic_cache(tmp_path / "s.h5", num_samples=100, num_classes=4,
                                feature_dims=dims, fusion="sum", seed=2)
    with open_cache(path) as cache:
        assert cache.meta.fused_dim == sum(dims)
        mean = np.mean([cache.logits(m) for m in cache.meta.modalities], axis=0)
        np.testing.assert_allclose(cache.logits("mm"), mean, atol=1e-5)


@pytest.mark.parametrize("dims", [(6, 6), (4, 4, 4)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nl_gate_cache_is_consistent_where_it_can_be_checked(tmp_path, dims, dtype):
    path = make_synthetic_cache(tmp_path / "s.h5", num_samples=200, num_classes=5,
                                feature_dims=dims, fusion="nl-gate", feature_dtype=dtype,
                                batch_rows=64, mc_samples=2, seed=4)
    with open_cache(path) as cache:
        assert cache.meta.fused_dim == dims[0] and "head_input" in cache._specs
        assert coalition_error(cache) < 1e-4
        weight, bias = cache.head()
        coal = cache.coalitions()
        np.testing.assert_allclose(coal[:, 0], np.broadcast_to(coal[0, 0], coal[:, 0].shape))
        np.testing.assert_allclose(coal[:, 1], cache.features("m0") @ weight.T + bias, atol=1e-5)
        # nonlinear: the head input is neither the sum nor any mean of the blocks
        blocks = [cache.features(m).astype(np.float32) for m in cache.meta.modalities]
        gap = np.abs(cache.head_input() - np.sum(blocks, axis=0)).max()
        assert gap > 0.1 and np.abs(cache.head_input() - np.mean(blocks, axis=0)).max() > 0.1


def test_recomputable_coalitions():
    from mmal.cache.consistency import recomputable_coalitions
    from mmal.cache.schema import CacheMeta

    def meta(fusion, m):
        return CacheMeta(modalities=[f"m{i}" for i in range(m)], feature_dims=[4] * m,
                         fusion=fusion, num_classes=3, fused_dim=4 if fusion == "nl-gate" else 0)

    assert recomputable_coalitions(meta("concat", 3)) == list(range(8))
    assert recomputable_coalitions(meta("nl-gate", 2)) == [0, 1, 2, 3]
    assert recomputable_coalitions(meta("nl-gate", 3)) == [0, 1, 2, 4, 7]


@pytest.mark.parametrize("where", [(10, 0, 1), (11, 1, 0), (12, 2, 2), (13, 3, 4), "mm"])
def test_nl_gate_consistency_detects_each_checkable_tampering(tmp_path, where):
    import h5py

    path = make_synthetic_cache(tmp_path / "s.h5", num_samples=50, feature_dims=(4, 4),
                                fusion="nl-gate", seed=0)
    with h5py.File(path, "r+") as f:
        if where == "mm":
            f["logits/mm"][7, 1] += 0.5
        else:
            f["coalitions"][where] += 0.5
    with open_cache(path) as cache:
        assert coalition_error(cache) == pytest.approx(0.5, abs=1e-4)


def test_nl_gate_consistency_detects_a_changed_head_input(tmp_path):
    import h5py

    path = make_synthetic_cache(tmp_path / "s.h5", num_samples=50, feature_dims=(4, 4),
                                fusion="nl-gate", seed=0)
    with h5py.File(path, "r+") as f:
        f["head_input"][7] *= -1.0
    with open_cache(path) as cache:
        assert coalition_error(cache) > 0.01


def test_consistency_check_detects_a_tampered_coalition(tmp_path):
    import h5py

    path = make_synthetic_cache(tmp_path / "s.h5", num_samples=50, seed=0)
    with h5py.File(path, "r+") as f:
        f["coalitions"][10, 1, 2] += 0.5
    with open_cache(path) as cache:
        assert coalition_error(cache) == pytest.approx(0.5, abs=1e-4)


def test_generator_is_deterministic_and_respects_parameters(tmp_path):
    a = make_synthetic_cache(tmp_path / "a.h5", num_samples=120, num_classes=4, seed=3,
                             labeled_fraction=0.25, multi_label=True, mc_samples=2)
    b = make_synthetic_cache(tmp_path / "b.h5", num_samples=120, num_classes=4, seed=3,
                             labeled_fraction=0.25, multi_label=True, mc_samples=2)
    ca, cb = open_cache(a), open_cache(b)
    assert ca.fingerprint == cb.fingerprint
    assert ca.num_labeled == 30
    assert ca.mc_logits().shape == (120, 2, 4)
    assert ca.labels.shape == (120, 4)
    assert np.all(ca.labels[~ca.labeled] == -1)


@pytest.mark.parametrize("fusion", ["concat", "sum", "feature-sum"])
def test_dominance_makes_the_first_modality_dominate(tmp_path, fusion):
    from mmal.cache.summary import summarize_cache

    balanced = make_synthetic_cache(tmp_path / "bal.h5", num_samples=2000, dominance=1.0, seed=2,
                                    feature_dims=(32, 32), fusion=fusion)
    skewed = make_synthetic_cache(tmp_path / "skew.h5", num_samples=2000, dominance=4.0, seed=2,
                                  feature_dims=(32, 32), fusion=fusion)
    share_bal = summarize_cache(open_cache(balanced))["dominance"]["m0"]
    share_skew = summarize_cache(open_cache(skewed))["dominance"]["m0"]
    assert 0.3 < share_bal < 0.7
    assert share_skew > 0.85


def test_synth_command_writes_the_requested_cache_and_refuses_bad_widths(tmp_path):
    from click.testing import CliRunner

    from mmal.cli import cli

    path = tmp_path / "pool.h5"
    run = CliRunner().invoke
    result = run(cli, ["synth", str(path), "-n", "50", "-k", "3", "--dims", "6,4,2",
                       "--fusion", "concat", "--mc-samples", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    with open_cache(path) as cache:
        meta = cache.meta
        assert (cache.num_samples, meta.num_classes, meta.feature_dims, meta.mc_samples) == \
            (50, 3, (6, 4, 2), 2)
        assert coalition_error(cache) < 1e-4
    for dims, message in [("4,0", "every feature width must be >= 1"),
                          ("4,x", "is not a comma-separated list of integers")]:
        result = run(cli, ["synth", str(tmp_path / "bad.h5"), "--dims", dims])
        assert result.exit_code == 2 and message in result.output
        assert not (tmp_path / "bad.h5").exists()
    again = run(cli, ["synth", str(path)])
    assert again.exit_code == 1 and "already exists" in again.output


@pytest.mark.parametrize("fusion,dims", [("concat", "6,4"), ("sum", "6,4"), ("feature-sum", "5,5"),
                                         ("nl-gate", "5,5")])
def test_synth_command_writes_every_fusion(tmp_path, fusion, dims):
    from click.testing import CliRunner

    from mmal.cli import cli

    path = tmp_path / "pool.h5"
    result = CliRunner().invoke(cli, ["synth", str(path), "-n", "40", "-k", "3", "--dims", dims,
                                      "--fusion", fusion, "--mc-samples", "2"])
    assert result.exit_code == 0, result.output
    with open_cache(path) as cache:
        assert cache.meta.fusion == fusion and cache.schema_version == 2
        assert coalition_error(cache) < 1e-4


@pytest.mark.parametrize("fusion", ["feature-sum", "nl-gate"])
def test_synth_command_refuses_unequal_widths_for_fusions_that_need_equal_ones(tmp_path, fusion):
    from click.testing import CliRunner

    from mmal.cli import cli

    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "bad.h5"), "--dims", "6,4",
                                      "--fusion", fusion])
    assert result.exit_code == 2
    assert f"'6,4': {fusion} fusion needs equal widths (e.g. 64,64)" in result.output
    assert not (tmp_path / "bad.h5").exists()


def test_fingerprint_does_not_depend_on_the_read_block(tmp_path):
    path = make_synthetic_cache(tmp_path / "c.h5", num_samples=300, feature_dtype="float16",
                                mc_samples=2, multi_label=True, seed=1)
    with h5py.File(path, "r") as f:
        whole = content_fingerprint(f, block_bytes=1 << 40)
        assert content_fingerprint(f, block_bytes=1) == whole  # one row per read
        assert content_fingerprint(f, block_bytes=1000) == whole
        assert f.attrs["content_fingerprint"] == whole


def test_written_in_batches_never_whole(tmp_path, monkeypatch):
    sizes = []
    append = CacheWriter.append

    def recording(self, batch):
        sizes.append(len(batch["ids"]))
        append(self, batch)

    monkeypatch.setattr(CacheWriter, "append", recording)
    make_synthetic_cache(tmp_path / "c.h5", num_samples=300, feature_dtype="float16",
                         batch_rows=64, seed=1)
    assert sizes == [64, 64, 64, 64, 44]

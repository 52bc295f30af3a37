"""Synthetic caches are valid and self-consistent (coalitions from head and features)."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache import open_cache
from mmal.cache.consistency import coalition_error
from mmal.cache.synthetic import make_synthetic_cache


@pytest.mark.parametrize("fusion,dims", [("concat", (12, 7)), ("sum", (9, 9)),
                                         ("concat", (5, 4, 3)), ("sum", (6, 6, 6))])
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


@pytest.mark.parametrize("fusion", ["concat", "sum"])
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

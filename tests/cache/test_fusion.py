"""mmal.cache.fusion: the head input of the linear fusions, and nl-gate's refusal."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache.fusion import FUSIONS, LINEAR_FUSIONS, head_input, stores_head_input
from mmal.commands.cache import SYNTH_FUSIONS

Z1 = np.array([[1.0, 2.0], [3.0, 4.0]])
Z2 = np.array([[10.0, 20.0], [30.0, 40.0]])


def test_the_fusion_tables():
    assert LINEAR_FUSIONS == ("concat", "sum", "feature-sum")
    assert FUSIONS == (*LINEAR_FUSIONS, "nl-gate")
    assert SYNTH_FUSIONS == FUSIONS
    assert [stores_head_input(f) for f in FUSIONS] == [False, False, False, True]


@pytest.mark.parametrize("fusion,expected", [
    ("concat", [[1, 2, 10, 20], [3, 4, 30, 40]]),
    ("sum", [[1, 2, 10, 20], [3, 4, 30, 40]]),  # the paper's sum: [W_1, W_2] / M over [z_1, z_2]
    ("feature-sum", [[11, 22], [33, 44]]),
])
def test_head_input_known_answers(fusion, expected):
    np.testing.assert_array_equal(head_input([Z1, Z2], fusion), expected)


@pytest.mark.parametrize("fusion,expected", [
    ("concat", [[0, 0, 5, 10], [0, 0, 3, 4]]),
    ("sum", [[0, 0, 5, 10], [0, 0, 3, 4]]),
    ("feature-sum", [[5, 10], [3, 4]]),
])
def test_weights_and_absent_modalities(fusion, expected):
    h = head_input([Z1, Z2], fusion, weights=[np.array([2.0, 2.0]), np.array([0.5, 0.1])],
                   present=[False, True])
    np.testing.assert_allclose(h, expected)


@pytest.mark.parametrize("fusion,message", [
    ("nl-gate", "fusion 'nl-gate' has no head input computed from features; its head input is no "
                "function of the blocks, read it from the cache (Cache.head_input)"),
    ("attention", "fusion 'attention' has no head input computed from features; expected one of "),
])
def test_nonlinear_and_unknown_fusions_are_refused(fusion, message):
    with pytest.raises(ValueError) as err:
        head_input([Z1, Z2], fusion)
    assert str(err.value).startswith(message)

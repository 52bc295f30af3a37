"""Every random stream mmal derives from a run's seed, in one place.

A workspace has one seed (``al.seed``; ``mmal run --seeds`` gives one per
trajectory). Each random draw takes a stream named by the integers that follow
the seed, so a rerun repeats every draw:

===========================  =============================  ===============================
stream                       parts                          used by
===========================  =============================  ===============================
round 0's random labeled     (seed)                         :func:`rng` in
set                                                         ``workspace.init_workspace``
UCI train/test split         (seed)                         :func:`rng` in ``data/uci.py``
model initialisation         (seed, round, 0)               ``torch.manual_seed`` in train
epoch ``e``: dropout         (seed, round, e + 1)           ``torch.manual_seed`` in train
epoch ``e``: sample order    (seed, round, e)               :func:`rng`, permutation
augmentation of a sample     (derive_seed(seed, round),     :func:`rng` in the dataset
                             e, pool row)
MC dropout of a batch        (seed, round, first pool row)  ``torch.Generator`` in extract
selection in ``mmal run``    (seed, round, 7)               :func:`selection_seed`
===========================  =============================  ===============================

Three pairs of streams share their parts: round 0's draw and the UCI split
both come from (seed); the sample order of epoch e + 1 and the dropout seed of
epoch e both come from (seed, round, e + 1); and the selection stream of ``mmal
run`` has the parts of epoch 6's dropout seed. The first pair draws from one
permutation stream for two unrelated purposes (which samples are labeled at
first, which go to the UCI test split); the others feed different generators
(NumPy's PCG64 and torch's Mersenne Twister, or a strategy's generator).
Renumbering any of them would change every result computed so far, so they
stay as they are. A new stream should take a
last part that none of the above uses (e.g. 1000 and up).
"""

from __future__ import annotations

import numpy as np

#: The last part of the selection streams of ``mmal run``. It is what the first
#: release used; results of existing runs stay reproducible only with it.
SELECTION_STREAM = 7


def derive_seed(*parts: int) -> int:
    """A 63-bit seed for torch (``manual_seed``, ``Generator``) derived from ``parts``."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def rng(*parts: int) -> np.random.Generator:
    """A NumPy generator on the stream ``parts`` (the same as ``default_rng(list(parts))``)."""
    return np.random.default_rng([int(p) for p in parts])


def selection_seed(seed: int, round: int) -> int:
    """The ``--seed`` that ``mmal run`` passes to round ``round``'s selection (32 bits)."""
    return int(np.random.SeedSequence([int(seed), int(round), SELECTION_STREAM])
               .generate_state(1)[0])

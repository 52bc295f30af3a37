"""Frozen encoders' outputs, stored once per workspace and shared by training and extraction.

A frozen encoder (``modalities.<m>.freeze = true``) gives the same output in
every epoch of every round, so mmal computes it once over the train pool and
the test split and keeps it in ``encoded/<split>/<modality>.h5``
(:func:`mmal.workspace.encoded_path`). Rounds then decode only the media of
the modalities that still train and feed the stored outputs to the fusion and
heads (``MultimodalModel.encode(inputs, encoded)``). See docs/training.md,
"Frozen encoders and the encoder-output store".

Modules: ``store`` (the HDF5 file), ``encode`` (fingerprint, compute, the
front door :func:`load_or_encode`), ``dataset`` (the torch Dataset that mixes
decoded and stored modalities).
"""

from mmal.encoded.dataset import StoredDataset, collate
from mmal.encoded.encode import load_or_encode, store_key, stored_modalities, weights_digest
from mmal.encoded.store import read_store, write_store

__all__ = ["StoredDataset", "collate", "load_or_encode", "read_store", "store_key",
           "stored_modalities", "weights_digest", "write_store"]

"""What a frozen encoder's fingerprint covers: the weights and the preprocessing its folder sets.

A transformers encoder reads part of its preprocessing from its model folder
(an image model's ``image_mean``/``image_std``, an audio model's feature
extractor, a text model's tokenizer), not from its state dict. Such a file
edited in place changes the features, so it must change the digest that keys
the encoder-output store; otherwise rounds keep training on stale features.
"""

from __future__ import annotations

import json

import pytest
import torch

from mmal.encoded import weights_digest
from mmal.models.encoders import build_encoder
from tests.models.test_hf_encoders import _input, _modality
from tests.models.tiny import tiny_bert, tiny_hf

torch.set_num_threads(1)


def _features(encoder, x):
    encoder.eval()
    with torch.no_grad():
        return encoder(x)


def _edit_json(path, **changes):
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **changes}))


@pytest.mark.parametrize("encoder, change", [
    ("vit", {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.2, 0.3, 0.4]}),
    ("ast", {"mean": 1.5, "std": 2.0}),
    ("wav2vec2", {"do_normalize": False}),
])
def test_a_preprocessor_config_edited_in_place_changes_the_digest(tmp_path, encoder, change):
    folder = tiny_hf(tmp_path / encoder, encoder)
    modality = _modality(tmp_path, encoder, folder)
    x = _input(encoder)[-1]
    before = build_encoder(modality)
    _edit_json(folder / "preprocessor_config.json", **change)
    after = build_encoder(modality)
    assert not torch.allclose(_features(before, x), _features(after, x))  # the features moved
    assert weights_digest(before) != weights_digest(after)


def test_an_unchanged_folder_keeps_the_digest(tmp_path):
    folder = tiny_hf(tmp_path / "ast", "ast")
    modality = _modality(tmp_path, "ast", folder)
    assert weights_digest(build_encoder(modality)) == weights_digest(build_encoder(modality))


def test_a_tokenizer_vocabulary_edited_in_place_changes_the_digest(tmp_path):
    folder = tiny_bert(tmp_path / "bert")
    modality = _modality(tmp_path, "bert", folder)
    torch.manual_seed(0)
    before = build_encoder(modality)
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]  # word -> id
    first, last = "bake", "whiskers"
    vocab[first], vocab[last] = vocab[last], vocab[first]  # two ids swapped
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    torch.manual_seed(0)
    after = build_encoder(modality)
    text = ["whiskers bake"]
    assert not torch.allclose(_features(before, text), _features(after, text))
    assert weights_digest(before) != weights_digest(after)


def test_a_text_folder_without_pooler_weights_keeps_its_digest_across_seeds(tmp_path):
    """BERT's pooler is never read (features are a mean over tokens); a folder saved
    without it (from a masked-LM model) gets a random one drawn from the round's seed,
    which must not make every round and seed compute the store again."""
    from transformers import BertModel

    folder = tiny_bert(tmp_path / "bert")
    torch.manual_seed(0)
    BertModel(BertModel.config_class.from_pretrained(folder), add_pooling_layer=False
              ).save_pretrained(folder)
    modality = _modality(tmp_path, "bert", folder)
    encoders = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        encoders.append(build_encoder(modality))
    text = ["whiskers bake"]
    assert torch.equal(_features(encoders[0], text), _features(encoders[1], text))
    assert weights_digest(encoders[0]) == weights_digest(encoders[1])

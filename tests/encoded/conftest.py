"""Fixtures shared by the encoder-output store tests."""

from __future__ import annotations

import pytest

import mmal.encoded.encode as encode_module


@pytest.fixture
def calls(monkeypatch):
    """(modality, split) of every store computed from here on."""
    seen: list[tuple[str, str]] = []
    real = encode_module.encode_split

    def counting(encoder, modality, pool, *args, **kwargs):
        seen.append((modality.name, pool.split))
        return real(encoder, modality, pool, *args, **kwargs)

    monkeypatch.setattr(encode_module, "encode_split", counting)
    return seen

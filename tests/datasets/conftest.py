"""Fixtures of the dataset tests."""

from __future__ import annotations

import pytest

from tests.fixtures_hf import go_offline


@pytest.fixture
def offline_hf(tmp_path, monkeypatch):
    """Hugging Face offline with a private cache for one test, and no split left open after."""
    from mmal.data import hf

    go_offline(monkeypatch, tmp_path / "hf-cache")
    yield
    hf._open.cache_clear()

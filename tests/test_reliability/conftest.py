"""Fixtures of the reliability catalogue (issue 9); helpers are in rel_helpers.py."""
import pytest


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cache and no DEEPSCOPE_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPSCOPE_DATA", raising=False)
    return tmp_path

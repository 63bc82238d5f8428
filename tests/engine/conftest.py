"""Engine tests never touch the user's run store or dataset cache."""

import pytest


@pytest.fixture(autouse=True)
def isolated_folders(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CIFAR_STUDIO_HOME", str(tmp_path_factory.mktemp("store")))
    monkeypatch.setenv("CIFAR_STUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))

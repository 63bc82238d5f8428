"""engine.datasets.keras_downloads: CIFAR-10 through Keras' cache, and Keras' own loaders."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from datasetfiles import check_cifar, write_cifar_folder, write_cifar_tar
from engine.config import DatasetConfig
from engine.datasets import keras_datasets_dir, keras_downloads, load_dataset
from engine.datasets.cifar10 import CIFAR10_FILES, KERAS_CIFAR10_FOLDER
from engine.errors import DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def private_keras_home(tmp_path, monkeypatch):
    """Never touch the user's Keras cache, and never download."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(keras_downloads, "CIFAR10_URL", (tmp_path / "no-such-download.tar.gz").as_uri())


def keras_datasets(tmp_path):
    return tmp_path / "keras-home" / "datasets"


def test_keras_datasets_dir_follows_keras_home(tmp_path):
    assert keras_datasets_dir() == str(keras_datasets(tmp_path))


def test_cifar10_from_an_unpacked_keras_cache(tmp_path):
    arrays = write_cifar_folder(keras_datasets(tmp_path) / KERAS_CIFAR10_FOLDER / "cifar-10-batches-py")
    events = []
    ds = load_dataset(DatasetConfig(source="cifar10", validation_split=0.0), report=events.append)
    check_cifar(ds, arrays)
    assert ds.description == "CIFAR-10 (Keras download)"
    assert not [e for e in events if e.stage == "download"]


def test_cifar10_archive_in_the_keras_cache_is_unpacked_where_keras_looks(tmp_path):
    path, arrays = write_cifar_tar(tmp_path)
    keras_datasets(tmp_path).mkdir(parents=True)
    os.replace(path, keras_datasets(tmp_path) / keras_downloads.KERAS_CIFAR10_ARCHIVE)
    events = []
    ds = load_dataset(DatasetConfig(source="cifar10", validation_split=0.0), report=events.append)
    check_cifar(ds, arrays)
    assert not [e for e in events if e.stage == "download"]
    unpacked = keras_datasets(tmp_path) / KERAS_CIFAR10_FOLDER / "cifar-10-batches-py"
    assert sorted(os.listdir(unpacked)) == sorted(CIFAR10_FILES)


def test_cifar10_download_failure_says_how_to_go_on(tmp_path):
    with pytest.raises(DatasetError) as caught:
        load_dataset(DatasetConfig(source="cifar10"))
    message = str(caught.value)
    assert "Downloading CIFAR-10 failed" in message
    assert "CIFAR-10 archive" in message and "image folder" in message
    assert not list(keras_datasets(tmp_path).iterdir())


def test_cifar10_download_reports_progress_and_fills_the_keras_cache(tmp_path, monkeypatch):
    path, arrays = write_cifar_tar(tmp_path)
    monkeypatch.setattr(keras_downloads, "CIFAR10_URL", path.as_uri())
    monkeypatch.setattr(keras_downloads, "CIFAR10_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    events = []
    ds = load_dataset(DatasetConfig(source="cifar10", validation_split=0.0), report=events.append)
    check_cifar(ds, arrays)
    downloads = [e for e in events if e.stage == "download"]
    assert downloads[0].text == "Downloading CIFAR-10: 0%" and downloads[-1].fraction == 1.0
    assert (keras_datasets(tmp_path) / keras_downloads.KERAS_CIFAR10_ARCHIVE).is_file()


def test_cifar10_download_with_a_wrong_checksum_is_discarded(tmp_path, monkeypatch):
    path, _ = write_cifar_tar(tmp_path)
    monkeypatch.setattr(keras_downloads, "CIFAR10_URL", path.as_uri())
    with pytest.raises(DatasetError, match="damaged"):
        load_dataset(DatasetConfig(source="cifar10"))
    assert not list(keras_datasets(tmp_path).iterdir())


# --- Keras' own loaders (a fresh process, so KERAS_HOME applies) ----------------------


def write_idx(path, array):
    header = (b"\0\0\x08\x01" + len(array).to_bytes(4, "big")) if array.ndim == 1 else (
        b"\0\0\x08\x03" + b"".join(n.to_bytes(4, "big") for n in array.shape)
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_keras_sources_fashion_mnist_from_cache_and_cifar100_failure(tmp_path):
    folder = tmp_path / "keras-home" / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", x_train)
    write_idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(20) % 10).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", x_test)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(10) % 10).astype(np.uint8))
    script = textwrap.dedent(
        """
        import numpy as np
        from engine.config import DatasetConfig
        from engine.datasets import load_dataset
        from engine.errors import DatasetError
        ds = load_dataset(DatasetConfig(source="fashion_mnist", validation_split=0.0))
        print("fashion", ds.x_train.shape, ds.x_test.shape, ds.x_train.dtype, ds.y_train.dtype, ds.class_names[0])
        print("sum", int(ds.x_test.astype(np.int64).sum()))
        try:
            load_dataset(DatasetConfig(source="cifar100"))
        except DatasetError as exc:
            print("cifar100 error:", exc)
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO, KERAS_HOME=str(tmp_path / "keras-home"),
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="",
               TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fashion (20, 28, 28, 1) (10, 28, 28, 1) uint8 int64 T-shirt/top" in result.stdout
    assert f"sum {int(x_test.astype(np.int64).sum())}" in result.stdout
    assert "cifar100 error: Loading CIFAR-100 through Keras failed" in result.stdout
    assert "internet connection" in result.stdout


def test_class_name_lists():
    assert len(keras_downloads.CIFAR100_CLASS_NAMES) == 100
    assert keras_downloads.CIFAR100_CLASS_NAMES == sorted(keras_downloads.CIFAR100_CLASS_NAMES)
    assert len(keras_downloads.FASHION_MNIST_CLASS_NAMES) == 10

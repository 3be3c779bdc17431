"""A small CNN that reads digit shapes from grey-scale 32×32 maps: the judge of shape metrics.

The evaluation of a CGN (``cgn.evaluation``) asks "is this mask the digit it was asked for?"
and "did a digit shape leak into the texture or background map?". Both questions go to this
classifier, trained once on the binarised digit masks of MNIST-train images [0, 50000) (the
images the biased datasets train on; [50000, 60000) stay unseen for the double-colored and
Wildlife test splits) and scored on the official MNIST test set.

Training is seeded and deterministic for a given number of CPU threads (own generators; the
global RNG is untouched; float reductions depend on the thread count) and takes about 45 s on
two idle CPU cores (2 epochs of a strided CNN at batch 128; held-out accuracy ≈ 0.989). The weights are cached as safetensors in the data
directory, written atomically, with the held-out accuracy, the training settings and the
SHA-256 of the MNIST cache they came from as metadata; a cache that does not match the
request (other seed, subset or MNIST) is retrained.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cgn.data.base import digit_masks
from cgn.data.mnist import cache_path, load_mnist
from cgn.data.paths import data_root as resolve_data_root
from cgn.files import atomic_path, sha256_file
from cgn.seeding import derive_seed, make_generator

log = logging.getLogger(__name__)

FILE_NAME = "digit_classifier.safetensors"
FORMAT = "cgn-digit-classifier/1"
TRAIN_STOP = 50_000  # MNIST-train images [0, 50000)
EPOCHS = 2
BATCH_SIZE = 128
LEARNING_RATE = 3e-3  # peak of a one-cycle schedule


class DigitClassifier(nn.Module):
    """Three convolutions (strided, so cheap on a CPU) and an MLP head: (B, 1, 32, 32) in [0, 1] → logits (B, 10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2),  # 16×16
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8×8
            nn.Conv2d(64, 64, 3, stride=2, padding=1),  # 4×4
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes))
        self.heldout_accuracy: float | None = None  # set by training or loading
        self.metadata: dict[str, str] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 10)

    @property
    def device(self) -> torch.device:
        return self.head[-1].weight.device

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        """Class predictions (B,) for grey maps (B, 1, 32, 32) in [0, 1], in eval mode."""
        return self._batched(lambda chunk: self(chunk).argmax(1), x, batch_size)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        """The penultimate layer's features (B, 128) of grey maps (B, 1, 32, 32) in [0, 1], in
        eval mode: the space of the masks' Fréchet distance (``cgn.evaluation``)."""
        return self._batched(lambda chunk: self.head[:-1](self.features(chunk)), x, batch_size)

    def _batched(self, fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return torch.cat([fn(x[i : i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)])
        finally:
            self.train(was_training)


def accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` (N, 1, 32, 32) whose predicted class equals ``labels`` (N,)."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((classifier.predict(images).cpu() == labels.cpu()).double().mean())


def train_digit_classifier(
    masks: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
) -> DigitClassifier:
    """Train on (N, 1, 32, 32) masks in [0, 1] with Adam; deterministic for a given seed.

    Initialisation draws from a forked global RNG seeded by ``derive_seed(seed, ...)`` (so the
    caller's global stream is untouched) and the shuffling from its own generator.
    """
    with torch.inference_mode(False), torch.enable_grad():  # callers may sit in a no-grad context
        return _train(masks, labels, seed=seed, epochs=epochs, batch_size=batch_size)


def _train(masks: torch.Tensor, labels: torch.Tensor, *, seed: int, epochs: int, batch_size: int) -> DigitClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "digit_classifier", "init"))
        model = DigitClassifier()
    generator = make_generator(seed, "digit_classifier", "shuffle")
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    steps_per_epoch = -(-len(masks) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(masks), generator=generator)
        total = 0.0
        for start in range(0, len(masks), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(masks[index]), labels[index])  # masks[index]: (b, 1, 32, 32)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(index)
        log.info("digit classifier epoch %d/%d: train loss %.4f", epoch + 1, epochs, total / len(masks))
    return model.eval()


def classifier_path(data_root: str | os.PathLike | None = None) -> Path:
    return resolve_data_root(data_root) / FILE_NAME


def load_or_train_digit_classifier(
    data_root: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    max_train: int | None = None,
    epochs: int = EPOCHS,
) -> DigitClassifier:
    """The cached digit classifier of ``data_root``, trained (and cached) first if needed.

    ``max_train`` trains on the first ``max_train`` images only (for fast tests); the held-out
    score is always on the whole official MNIST test set. The returned model is in eval mode on
    the CPU and carries ``heldout_accuracy`` and its ``metadata``.
    """
    path = classifier_path(data_root)
    wanted = {
        "format": FORMAT,
        "seed": str(int(seed)),
        "epochs": str(int(epochs)),
        "train_images": str(TRAIN_STOP if max_train is None else min(int(max_train), TRAIN_STOP)),
        "mnist_sha256": sha256_file(cache_path(data_root)) if cache_path(data_root).is_file() else "",
    }
    cached = _load(path, wanted)
    if cached is not None:
        return cached

    started = time.perf_counter()
    mnist = load_mnist(data_root)
    n_train = int(wanted["train_images"])
    train_masks = digit_masks(mnist.train_images[:n_train])[:, None].float()  # (N, 1, 32, 32)
    train_labels = torch.from_numpy(mnist.train_labels[:n_train].astype("int64"))
    model = train_digit_classifier(train_masks, train_labels, seed=seed, epochs=epochs)
    test_masks = digit_masks(mnist.test_images)[:, None].float()  # (10000, 1, 32, 32)
    test_labels = torch.from_numpy(mnist.test_labels.astype("int64"))
    model.heldout_accuracy = accuracy(model, test_masks, test_labels)
    seconds = time.perf_counter() - started
    log.info(
        "digit classifier trained on %d masks in %.1f s; held-out accuracy %.4f",
        n_train,
        seconds,
        model.heldout_accuracy,
    )
    from cgn import __version__

    model.metadata = {
        **wanted,
        "kind": "digit_classifier",
        "heldout_accuracy": json.dumps(model.heldout_accuracy),
        "heldout_set": "mnist_test",
        "train_seconds": f"{seconds:.1f}",
        "cgn_version": __version__,
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=model.metadata)
    return model


def _load(path: Path, wanted: dict[str, str]) -> DigitClassifier | None:
    """The cached classifier if ``path`` exists, is readable and matches ``wanted``; else None."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        log.warning("the cached digit classifier %s is unreadable (%s); retraining it", path, e)
        return None
    stale = {k: (metadata.get(k), v) for k, v in wanted.items() if metadata.get(k) != v}
    if stale:
        log.info("the cached digit classifier %s does not match the request %s; retraining it", path, stale)
        return None
    model = DigitClassifier()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        log.warning("the cached digit classifier %s does not fit the model (%s); retraining it", path, e)
        return None
    model.heldout_accuracy = float(json.loads(metadata["heldout_accuracy"]))
    model.metadata = metadata
    return model.eval()

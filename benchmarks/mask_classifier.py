"""How well do a CGN's masks alone teach digit shapes?

Trains the paper's CNN (bf16 where native, no standardisation) on masks from the CGN's shape
mechanism, grey and without any texture, with uniform labels, and tests it on the real binarised digits
of the de-correlated test splits (MNIST-train [50000, 60000) and MNIST-test). A shape
mechanism that draws every digit of a class alike scores low here even when the digit
classifier reads each of its masks correctly (high shape effectiveness).

Usage: python benchmarks/mask_classifier.py CGN [--num 100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json

import torch

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn
from cgn.classifier import ClassifierConfig, train_classifier
from cgn.data.base import digit_masks
from cgn.data.mnist import load_mnist
from cgn.precision import resolve_precision

CHUNK = 1000


class Masks:
    """uint8 masks (N, 32, 32) in 0..255 as a classifier source of grey 3-channel images."""

    def __init__(self, masks: torch.Tensor, labels: torch.Tensor) -> None:
        self.masks, self.labels = masks, labels

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        pass

    def batch(self, index) -> dict[str, torch.Tensor]:
        grey = self.masks[index].float() / 255 * 2 - 1  # (B, 32, 32) in [-1, 1]
        return {"image": grey[:, None].expand(-1, 3, -1, -1).contiguous(), "label": self.labels[index]}


@torch.no_grad()
def generated_masks(checkpoint: str, num: int) -> Masks:
    model, _, _ = load_cgn(checkpoint)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, model.config.num_classes, (num,), generator=generator)
    chunks = []
    for start in range(0, num, CHUNK):
        y = labels[start : start + CHUNK]
        mask = model.make_mask(model.sample_noise(len(y), generator), y)[:, 0]
        chunks.append((mask * 255).round().to(torch.uint8))
    return Masks(torch.cat(chunks), labels)


def real_masks(images, labels) -> Masks:
    return Masks(digit_masks(images).to(torch.uint8) * 255, torch.from_numpy(labels.astype("int64")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--num", type=int, default=100_000, help="generated masks to train on")
    parser.add_argument("--out", help="write the result as JSON")
    args = parser.parse_args()

    mnist = load_mnist()
    tests = {
        "test": real_masks(mnist.train_images[50_000:60_000], mnist.train_labels[50_000:60_000]),
        "test_official": real_masks(mnist.test_images, mnist.test_labels),
    }
    source = generated_masks(args.checkpoint, args.num)
    config = ClassifierConfig(precision=resolve_precision("auto", "cpu"))  # bf16 where native, as the table
    _, result = train_classifier(source, tests, config, progress=True)
    report = {"checkpoint": args.checkpoint, "num_masks": args.num, **result.to_dict()}
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    reexec_with_allocator()
    main()

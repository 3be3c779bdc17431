"""Training step of the paper's classifier: ours against the layouts it replaced, in one run.

Times one training step (batch 64, real double-colored MNIST batches, Adadelta, the table's
settings: standardised input, fp32 or bf16 autocast) for three memory layouts of the same
model and weights, interleaved so that the machine's drift hits them alike:

- ``ours``: the first (3-channel) BatchNorm on contiguous input, the convolutions channels-last
  (MNISTClassifier.forward since 2026-11-29);
- ``channels_last``: everything channels-last (our classifier before 2026-11-29); on the CPU,
  PyTorch's BatchNorm with 3 channels is about 8x slower in this layout;
- ``contiguous``: everything contiguous (how a plain port runs).

Writes results/classifier_speed.json (images per second, medians). Needs prepared data.
Usage: python benchmarks/classifier_speed.py [--steps 30] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cgn.allocator import reexec_with_allocator
from cgn.classifier import MNISTClassifier
from cgn.data import build_dataset
from cgn.environment import write_result


class _Layout(MNISTClassifier):
    """The same model with one memory layout throughout (the baselines)."""

    def __init__(self, memory_format: torch.memory_format) -> None:
        super().__init__(standardize=True)
        self.memory_format = memory_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.standardized(x.contiguous(memory_format=self.memory_format))
        return F.log_softmax(self.head(self.features(x).flatten(1)), dim=1)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights for every layout
    if name == "ours":
        return MNISTClassifier(standardize=True).to(memory_format=torch.channels_last)
    layout = torch.channels_last if name == "channels_last" else torch.contiguous_format
    return _Layout(layout).to(memory_format=layout)


def train_block(model: torch.nn.Module, optimizer, batches: list[dict], precision: str) -> float:
    """Seconds per training step over ``batches``."""
    start = time.perf_counter()
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            log_probs = model(batch["image"]).float()
        loss = F.nll_loss(log_probs, batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="double_colored_mnist")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per layout (median)")
    parser.add_argument("--out", type=Path, default=Path("results/classifier_speed.json"))
    args = parser.parse_args()
    data = build_dataset(args.dataset, "train", 0)
    batches = [data.batch(torch.arange(i * 64, (i + 1) * 64)) for i in range(args.steps)]
    rows = {}
    for precision in ("fp32", "bf16"):
        models = {name: build(name) for name in ("ours", "channels_last", "contiguous")}
        optimizers = {name: torch.optim.Adadelta(m.parameters(), lr=1.0) for name, m in models.items()}
        for name in models:  # warm-up
            train_block(models[name], optimizers[name], batches, precision)
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.repeats):
            for name in models:
                times[name].append(train_block(models[name], optimizers[name], batches, precision))
        for name, values in times.items():
            seconds = statistics.median(values)
            rows[f"{precision}/{name}"] = {
                "seconds_per_step": round(seconds, 5),
                "images_per_s": round(64 / seconds, 1),
            }
            print(precision, name, rows[f"{precision}/{name}"], flush=True)
    write_result(
        args.out,
        {
            "rows": rows,
            "batch_size": 64,
            "torch_threads": torch.get_num_threads(),
            "notes": "one training step (forward, backward, Adadelta) of the paper's classifier with standardised "
            "input; medians of interleaved timed blocks",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

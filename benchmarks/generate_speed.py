"""Counterfactual images per second of `cgn generate` on this machine.

Generates shards with the paper-size CGN of each dataset (weights do not change the cost) in
fp32 and bf16, beside a baseline that uses ``nn.Upsample`` (PyTorch's nearest upsampling)
instead of our expand-based ``Upsample2x``, all in one run. Writes results/generate_speed.json.

Usage: python benchmarks/generate_speed.py [--num 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import save_weights
from cgn.config import paper_config
from cgn.counterfactuals import GenerationSpec, generate_counterfactuals
from cgn.environment import write_result
from cgn.mechanisms import Upsample2x
from cgn.model import CGN


class TorchUpsample(nn.Upsample):
    def __init__(self) -> None:
        super().__init__(scale_factor=2, mode="nearest")


def timed_generation(checkpoint: Path, spec: GenerationSpec, repeats: int) -> float:
    """Median images per second over ``repeats`` fresh generations."""
    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            generate_counterfactuals(checkpoint, Path(out) / "cf", spec, progress=False)
            rates.append(spec.num / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["double_colored_mnist", "wildlife_mnist"])
    parser.add_argument("--out", type=Path, default=Path("results/generate_speed.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            config = paper_config(dataset)
            checkpoint = save_weights(
                Path(tmp) / f"{dataset}.safetensors", CGN(config.model), config=config, kind="cgn", step=0
            )
            for precision in ("fp32", "bf16"):
                spec = GenerationSpec(num=args.num, per_mask=10, seed=0, precision=precision)
                ours = timed_generation(checkpoint, spec, args.repeats)
                import cgn.mechanisms as mechanisms

                mechanisms.Upsample2x = TorchUpsample  # the baseline: PyTorch's upsampling
                try:
                    baseline = timed_generation(checkpoint, spec, args.repeats)
                finally:
                    mechanisms.Upsample2x = Upsample2x
                row = {
                    "dataset": dataset,
                    "precision": precision,
                    "images_per_s": round(ours, 1),
                    "images_per_s_torch_upsample": round(baseline, 1),
                    "speedup": round(ours / baseline, 2),
                }
                print(row, flush=True)
                rows.append(row)
    write_result(
        args.out,
        {
            "num_images": args.num,
            "per_mask": 10,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

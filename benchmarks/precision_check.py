"""Is bf16 worth it on this machine? fp32 against bf16 autocast, from one matrix product to a
training step, beside what ``train.precision = "auto"`` picks here.

Times a 1024² matrix product, one batch-16 convolution of the generator (64→32 channels at
32×32, forward and backward) and the paper's double-colored training step at batch 16 without
the style loss (``Trainer.train_step``), each in fp32 and in bf16 autocast, as medians of
alternating blocks. On a CPU without native bf16 kernels the bf16 column can be tens of times
slower; the step is then timed over fewer steps.

Writes results/precision_check.json (--out). Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/precision_check.py [--steps 10] [--out PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.config import paper_config
from cgn.environment import median_seconds, write_result
from cgn.precision import bf16_is_native, resolve_precision
from cgn.trainer import Trainer, pick_device

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def matmul(device: torch.device, precision: str) -> Callable[[], None]:
    a, b = (torch.randn(1024, 1024, device=device) for _ in range(2))
    if precision == "bf16":
        a, b = a.bfloat16(), b.bfloat16()
    return lambda: (a @ b).sum().item()


def convolution(device: torch.device, precision: str) -> Callable[[], None]:
    conv = torch.nn.Conv2d(64, 32, 3, padding=1, bias=False).to(device, memory_format=torch.channels_last)
    x = torch.randn(16, 64, 32, 32, device=device).to(memory_format=torch.channels_last).requires_grad_()

    def run() -> None:
        with autocast(precision, device):
            y = conv(x)
        y.float().sum().backward()

    return run


def training_steps(device: torch.device, precision: str, steps: int, folder: Path) -> Callable[[], None]:
    config = paper_config(
        "double_colored_mnist",
        loss={"style_network": "none"},
        train={"precision": precision, "steps": 10_000, "device": device.type},
    )
    trainer = Trainer(config, folder / precision)
    trainer._prepare_run_dir(resume=False)

    def run() -> None:
        for _ in range(steps):
            trainer.train_step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed block")
    parser.add_argument("--out", type=Path, default=Path("results/precision_check.json"))
    args = parser.parse_args()
    device = pick_device("auto")
    native = bf16_is_native(device)
    steps = args.steps if native else max(2, args.steps // 5)  # slow bf16 kernels: fewer steps
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, unit in (
            ("matmul_1024", lambda p: matmul(device, p), None),
            ("conv_64to32_32x32_fwd_bwd", lambda p: convolution(device, p), None),
            ("train_step_double_colored_paper_no_style", lambda p: training_steps(device, p, steps, Path(tmp)), steps),
        ):
            seconds = median_seconds({p: make(p) for p in PRECISIONS})
            row = {f"{p}_ms": round(1000 * seconds[p] / (unit or 1), 2) for p in PRECISIONS}
            row["bf16_over_fp32_time"] = round(seconds["bf16"] / seconds["fp32"], 2)
            if name == "matmul_1024":
                row.update({f"{p}_gflops": round(2 * 1024**3 / seconds[p] / 1e9, 1) for p in PRECISIONS})
            rows[name] = row
            print(name, row, flush=True)
    result = {
        "device": str(device),
        "native_bf16": native,
        "auto_resolves_to": resolve_precision("auto", device),
        "rows": rows,
        "torch_threads": torch.get_num_threads(),
        "notes": "medians of 3 alternating blocks after a warm-up; a training block is "
        f"{steps} steps of the paper's double-colored config at batch 16 without the style loss",
    }
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

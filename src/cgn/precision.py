"""The number format a run computes in: fp32, bf16 autocast, or "auto" (bf16 where the hardware
has it).

bf16 autocast is 1.7-2× faster on a CPU with native bf16 (AVX-512 or AMX, through oneDNN) and
on recent GPUs, but a CPU without it falls back to slow reference kernels: on an AVX2-only AMD
EPYC, a 2048² bf16 matrix product ran at 0.3 GFLOP/s against 92 in fp32, and a batch-16
double-colored training step took 1.17 s against 0.14 s in fp32 (docs/speed.md, "Precision"). The fast
recipes therefore ask for "auto", which resolves once per run on the device it runs on.
"""

from __future__ import annotations

import functools
import logging

import torch

from cgn.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "auto")

log = logging.getLogger(__name__)


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether bf16 autocast runs on native kernels on ``device`` (a CUDA GPU with bf16, or a
    CPU whose oneDNN has bf16 kernels: AVX-512 or AMX on x86, bf16 on ARM)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has_bf16()
    return False


@functools.cache
def _cpu_has_bf16() -> bool:
    # The check PyTorch itself makes before choosing oneDNN's bf16 kernels.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str, what: str) -> None:
    """Raise a one-line ``ConfigError`` for a precision name other than fp32, bf16 or auto."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{what} must be 'fp32', 'bf16' or 'auto', not {precision!r}")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision a run on ``device`` computes in, "fp32" or "bf16": "auto" picks bf16 only
    where it is native; an explicit "bf16" is kept, with a warning where it is not native."""
    if precision == "auto":
        return "bf16" if bf16_is_native(device) else "fp32"
    if precision == "bf16" and not bf16_is_native(device):
        _warn_slow_bf16()
    return precision


@functools.cache  # once per process
def _warn_slow_bf16() -> None:
    log.warning(
        "bf16 was asked for, but this device has no native bf16 kernels (an x86 CPU needs AVX-512 or AMX): "
        "steps run 10x or more slower than in fp32; set the precision to 'auto' or 'fp32'"
    )

"""What a result was measured on (machine, package versions, git commit), and how benchmarks time."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from cgn.allocator import in_use

PACKAGES = ("cgn", "torch", "torchvision", "numpy", "pillow", "safetensors")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    described = f"{cpu}, {cores} cores, {platform.system()} {platform.release()}"
    import torch  # imported here: the rest of this module stays light to import

    if torch.cuda.is_available():
        described += f", GPU {torch.cuda.get_device_name(0)}"
    return described


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def git_dirty(cwd: str | os.PathLike | None = None) -> bool | None:
    """Whether tracked files differ from HEAD (the result then came from uncommitted code)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def describe() -> dict[str, object]:
    """A JSON-ready description of where and with what a result was produced."""
    return {
        "machine": machine(),
        "versions": versions(),
        "allocator": in_use(),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
    }


def write_result(path: str | os.PathLike, result: dict[str, object], argv: list[str] | None = None) -> Path:
    """Write a benchmark's JSON with the command that produced it, the machine and versions."""
    import json
    import shlex
    import sys

    from cgn.files import write_text

    command = " ".join(["python", *map(shlex.quote, sys.argv if argv is None else argv)])
    write_text(path, json.dumps({**result, "command": command, **describe()}, indent=2) + "\n")
    return Path(path)


def median_seconds(runs: dict[str, Callable[[], None]], repeats: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating blocks after one warm-up
    (the machine's speed drifts by tens of percent within minutes, so variants take turns)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_gflops(dtype_name: str = "fp32", size: int = 2048, repeats: int = 5) -> float:
    """How fast this machine multiplies right now: GFLOP/s of a ``size``² matrix product in
    ``dtype_name`` ("fp32" or "bf16"), the median of ``repeats`` after a warm-up. Shared CPUs
    wander by tens of percent within an hour; a benchmark records this beside its timings."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dtype_name not in dtypes:
        raise ValueError(f"matmul_gflops measures 'fp32' or 'bf16', not {dtype_name!r}")
    dtype = dtypes[dtype_name]
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    seconds = median_seconds({"mm": lambda: a @ b}, repeats)["mm"]
    return float(f"{2 * size**3 / seconds / 1e9:.4g}")  # 4 significant digits: never 0 on a loaded machine

"""Helpers for benchmarks that time each variant in a fresh worker process (so that each can
run on its own memory allocator, ``cgn.allocator``): start a worker, read its JSON, time blocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from cgn.allocator import ACTIVE_ENV, ENV


def run_worker(arguments: list[str], allocator: str) -> dict[str, object]:
    """Run ``python <arguments>`` with ``CGN_ALLOCATOR=allocator`` and return the JSON object on the
    last line of its output (the worker calls ``reexec_with_allocator`` to apply the choice)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", ACTIVE_ENV)}
    done = subprocess.run([sys.executable, *arguments], env={**env, ENV: allocator}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker {' '.join(arguments)} on {allocator} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ms_per_step(step: Callable[[], None], warmup: int, steps: int, blocks: int) -> list[float]:
    """Milliseconds per call of ``step`` in each of ``blocks`` timed blocks, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    ms = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        ms.append((time.perf_counter() - start) * 1000 / steps)
    return ms

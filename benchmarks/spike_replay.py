"""Replay a window of a CGN training from one of its checkpoints, with and without
``train.d_grad_clip``, to see whether a loss spike recurs.

Training is deterministic on the CPU, so the replay without a clip repeats the run's own steps
bit for bit (a spike included) and each clip limit shows what it would have changed. Per limit
it records every step's discriminator loss and gradient norm, and summarises: the largest loss,
the steps with a loss above 1 (a healthy LSGAN discriminator sits near 0.25), and the clipped
steps.

Usage: python benchmarks/spike_replay.py RUN_DIR --from STEP --to STEP --clips 0 10 20
       [--out results/cgn_quality_ablation.json --entry NAME]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

from cgn.allocator import reexec_with_allocator
from cgn.config import CGNConfig
from cgn.environment import describe
from cgn.files import write_text
from cgn.trainer import Trainer


def replay(run_dir: Path, start: int, stop: int, clip: float) -> dict:
    """Steps ``start``..``stop`` of ``run_dir``'s training with ``train.d_grad_clip = clip``
    (0: none; the norm is still measured, with a limit no step reaches)."""
    config = CGNConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    checkpoint = run_dir / "checkpoints" / f"step_{start:07d}"
    if not checkpoint.is_dir():
        raise SystemExit(f"error: {checkpoint} not found (a run keeps its last two checkpoints)")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(config, Path(scratch) / "run")
        trainer.load_checkpoint(checkpoint)  # checked against the run's own config; then the clip
        trainer.config = config.override(f"train.d_grad_clip={clip or math.inf}")
        steps = []
        while trainer.step < stop:
            step = trainer.step
            losses = trainer.train_step()
            steps.append({"step": step, "d": float(losses["d"]), "d_grad_norm": float(losses["d_grad_norm"])})
        shutil.rmtree(Path(scratch) / "run", ignore_errors=True)
    worst = max(steps, key=lambda s: s["d"])
    return {
        "clip": clip,
        "max_d": round(worst["d"], 4),
        "max_d_step": worst["step"],
        "steps_d_above_1": sum(s["d"] > 1 for s in steps),
        "clipped_steps": sum(s["d_grad_norm"] > clip for s in steps) if clip else 0,
        "max_d_grad_norm": round(max(s["d_grad_norm"] for s in steps), 2),
        "steps": [{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for s in steps],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--from", dest="start", type=int, required=True, help="a step with a kept checkpoint")
    parser.add_argument("--to", dest="stop", type=int, required=True)
    parser.add_argument("--clips", type=float, nargs="+", default=[0.0, 10.0])
    parser.add_argument("--out", type=Path, help="a JSON file to add the result to (under --entry)")
    parser.add_argument("--entry", default="spike_replay")
    args = parser.parse_args()
    runs = [replay(args.run_dir, args.start, args.stop, c) for c in args.clips]
    for r in runs:
        print(
            f"clip {r['clip']:g}: max D loss {r['max_d']:.3f} at step {r['max_d_step']}, "
            f"{r['steps_d_above_1']} steps above 1, {r['clipped_steps']} clipped, max norm {r['max_d_grad_norm']}"
        )
    if args.out:
        env = describe()
        result = {
            "command": "python " + " ".join(sys.argv),
            "run_dir": str(args.run_dir),
            "window": [args.start, args.stop],
            "replays": runs,
            "machine": env["machine"],
            "versions": env["versions"],
            "git_commit": env["git_commit"],
        }
        data = json.loads(args.out.read_text()) if args.out.exists() else {}
        data[args.entry] = result
        write_text(args.out, json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.out} ({args.entry})")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

"""The disentanglement metrics of a run's checkpointed weight averages, as stored and calibrated.

A checkpoint of a run with ``train.ema_decay`` holds the moving average of the generator
(``checkpoints/step_*/average.safetensors``) with the live model's BatchNorm statistics, which
belong to other weights. The run's ``cgn.safetensors`` gets statistics recalibrated for the
average (trainer.WeightAverage), and since 2026-12-06 so does ``cgn.checkpoint.load_cgn`` for
a checkpoint's average. This evaluates each checkpoint's average both ways, and the run's
final ``cgn.safetensors``, on the same counterfactuals (``cgn.evaluation.evaluate_cgn``).

Checkpoints written before 2026-12-06 label the average as a plain generator; this script
reads their weights either way. Writes results/average_calibration.json (--out).
Usage: python benchmarks/average_calibration.py RUN_DIR [--samples 10000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn, load_state, read_weights
from cgn.environment import write_result
from cgn.evaluation import evaluate_cgn
from cgn.model import build_generator

KEYS = ("shape_effectiveness", "texture_effectiveness", "background_effectiveness", "mask_mean")


def metrics(model, dataset: str, samples: int) -> dict[str, float]:
    result = evaluate_cgn(model.eval(), dataset, num_samples=samples)
    return {key: result[key] for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("results/average_calibration.json"))
    args = parser.parse_args()

    rows = []
    for path in sorted(args.run_dir.glob("checkpoints/step_*/average.safetensors")):
        calibrated, config, metadata = load_cgn(path)
        state, _ = read_weights(path)
        stored = build_generator(config.model)
        load_state(stored, state, str(path))
        dataset = config.train.dataset
        row = {"checkpoint": str(path), "step": int(metadata["step"])}
        row["stored"] = metrics(stored, dataset, args.samples)
        row["calibrated"] = metrics(calibrated, dataset, args.samples)
        rows.append(row)
        print(row)
    final_path = args.run_dir / "cgn.safetensors"
    final = None
    if final_path.exists():
        model, config, metadata = load_cgn(final_path)
        final = {"checkpoint": str(final_path), "step": int(metadata["step"])}
        final["metrics"] = metrics(model, config.train.dataset, args.samples)
        print(final)
    print(f"wrote {write_result(args.out, {'checkpoints': rows, 'final': final, 'samples': args.samples})}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

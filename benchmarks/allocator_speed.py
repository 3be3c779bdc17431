"""Training speed on glibc's malloc against tcmalloc (``cgn.allocator``), and that the weights
come out the same.

An allocator is chosen when a process starts, so each measurement is a fresh worker process
(this script with ``--worker``) started with ``CGN_ALLOCATOR`` set; workers for the allocators
take turns, config by config, for ``--rounds`` rounds, and each reports the median of its timed
blocks. Every worker of a config trains the same number of steps from the same seed, and the
SHA-256 of its weights must agree across allocators.

    python benchmarks/allocator_speed.py --rounds 3 --out results/allocator_speed.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
from pathlib import Path

from train_speed import make_trainer  # benchmarks/ is on the path when run as a script
from workers import ms_per_step, run_worker

from cgn.allocator import find_library, in_use, reexec_with_allocator
from cgn.environment import matmul_gflops, write_result

# (dataset, style loss): the paper's configs at batch 16 in bf16, as train_speed.py times them
CONFIGS = {
    "double_colored_mnist/no_style": ("double_colored_mnist", False),
    "double_colored_mnist/style": ("double_colored_mnist", True),
    "wildlife_mnist/no_style": ("wildlife_mnist", False),
    "wildlife_mnist/style": ("wildlife_mnist", True),
}


def worker(config: str, precision: str, warmup: int, steps: int, blocks: int) -> dict[str, object]:
    """Time one config in this process: ms per step of each block, and a digest of the weights."""
    dataset, style = CONFIGS[config]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(dataset, 16, style, precision, Path(tmp))
        ms = ms_per_step(trainer.train_step, warmup, steps, blocks)
        digest = hashlib.sha256()
        for module in (trainer.generator, trainer.discriminator):
            for tensor in module.state_dict().values():
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"allocator": in_use(), "ms_per_step": ms, "weights_sha256": digest.hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--allocators", nargs="+", default=["system", "tcmalloc"])
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--worker", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("results/allocator_speed.json"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.precision, args.warmup, args.steps, args.blocks)))
        return
    missing = [a for a in args.allocators if a != "system" and find_library(a) is None]
    if missing:
        raise SystemExit(f"not installed here: {', '.join(missing)} (see cgn.allocator)")
    matmul_before = matmul_gflops(args.precision)
    runs: dict[str, dict[str, list[dict[str, object]]]] = {c: {a: [] for a in args.allocators} for c in args.configs}
    for round_ in range(args.rounds):
        for config in args.configs:
            for allocator in args.allocators:
                arguments = [__file__, "--worker", config, "--precision", args.precision, "--warmup", str(args.warmup)]
                result = run_worker([*arguments, "--steps", str(args.steps), "--blocks", str(args.blocks)], allocator)
                runs[config][allocator].append(result)
                print(
                    f"round {round_ + 1} {config} {allocator}: {statistics.median(result['ms_per_step']):.2f} ms/step"
                )
    rows = []
    for config, by_allocator in runs.items():
        row: dict[str, object] = {"config": config, "batch_size": 16, "precision": args.precision}
        for allocator, results in by_allocator.items():
            assert all(r["allocator"] == allocator for r in results), f"a worker did not run on {allocator}"
            medians = [statistics.median(r["ms_per_step"]) for r in results]
            row[f"{allocator}_ms_per_step"] = round(statistics.median(medians), 2)
            row[f"{allocator}_ms_per_step_by_round"] = [round(m, 2) for m in medians]
            row[f"{allocator}_images_per_s"] = round(16_000 / statistics.median(medians), 1)
        base = row["system_ms_per_step"]
        for allocator in args.allocators[1:]:
            row[f"{allocator}_speedup"] = round(base / row[f"{allocator}_ms_per_step"], 3)
        digests = {r["weights_sha256"] for results in by_allocator.values() for r in results}
        row["same_weights"] = len(digests) == 1
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if "by_round" not in k}))
    result = {
        "rows": rows,
        "notes": (
            "the paper's configs at batch 16 as cgn train-cgn runs them; each figure is the median over rounds "
            "of a fresh worker process's median over timed blocks; workers alternate allocators config by "
            "config; same_weights: every worker of the config (both allocators) ended with the same weights"
        ),
        "machine_matmul_gflops": {"before": matmul_before, "after": matmul_gflops(args.precision)},
        "steps_per_block": args.steps,
        "blocks": args.blocks,
        "rounds": args.rounds,
    }
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

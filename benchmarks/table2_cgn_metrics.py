"""The disentanglement metrics of each CGN of a table, beside the accuracies its counterfactuals gave.

For every dataset and seed of a `cgn reproduce table2` run folder whose CGN checkpoint is there
(``<run-dir>/<dataset>/seed<k>/cgn/cgn.safetensors``), computes `cgn evaluate-cgn`'s metrics
(10,000 counterfactuals, by class) and reads the CGN only and Original + CGN accuracies from
the table's records. A generator the run folder no longer holds (the table keeps only what a
row still needs) is listed as missing. Results are kept per checkpoint in ``--out`` and
reused while the checkpoint's SHA-256 is unchanged, so reruns add only new seeds.

Usage: python benchmarks/table2_cgn_metrics.py [--run-dir runs/table2]
       [--records results/table2_records] [--out results/table2_cgn_metrics.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn
from cgn.environment import write_result
from cgn.evaluation import evaluate_cgn
from cgn.files import sha256_file
from cgn.reproduce import DATASETS

ACCURACY_ROWS = ("cgn", "original_cgn")


def accuracies(records: Path, dataset: str, seed: int) -> dict[str, dict[str, float] | None]:
    """The de-correlated test accuracies (test_official) of the rows built on this seed's CGN."""
    rows = {}
    for method in ACCURACY_ROWS:
        path = records / dataset / f"seed{seed}" / "classifiers" / f"{method}.json"
        record = json.loads(path.read_text()) if path.exists() else None
        rows[method] = record and {k: record[k] for k in ("test_acc", "test_official_acc")}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/table2"))
    parser.add_argument("--records", type=Path, default=Path("results/table2_records"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("results/table2_cgn_metrics.json"))
    args = parser.parse_args()
    previous = json.loads(args.out.read_text())["generators"] if args.out.exists() else {}
    generators = {}
    for dataset in DATASETS:
        for seed in args.seeds:
            key = f"{dataset}/seed{seed}"
            checkpoint = args.run_dir / dataset / f"seed{seed}" / "cgn" / "cgn.safetensors"
            entry = {"checkpoint": str(checkpoint), "accuracy": accuracies(args.records, dataset, seed)}
            if not checkpoint.exists():
                trained = (args.records / dataset / f"seed{seed}" / "cgn" / "unit.json").exists()
                missing = "trained, but no longer in the run folder" if trained else "not trained yet"
                generators[key] = {**entry, "metrics": None, "missing": missing}
                if key in previous and previous[key].get("metrics"):  # measured while it was there
                    generators[key] = {**previous[key], "accuracy": entry["accuracy"]}
                continue
            digest = sha256_file(checkpoint)
            if previous.get(key, {}).get("sha256") == digest:
                generators[key] = {**previous[key], "accuracy": entry["accuracy"]}
                continue
            model, _, _ = load_cgn(checkpoint)
            metrics = evaluate_cgn(model, dataset, num_samples=args.num, by_class=True)
            generators[key] = {**entry, "sha256": digest, "metrics": metrics}
            print(key, json.dumps({k: v for k, v in metrics.items() if not k.endswith("by_class")}), flush=True)
    write_result(args.out, {"num_counterfactuals": args.num, "generators": generators})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

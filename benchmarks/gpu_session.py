"""One GPU session, as a single time-boxed command: the issues' GPU checks on a borrowed machine.

    python benchmarks/gpu_session.py all --out OUT --budget 540

1. ``speed``: training images per second of the paper architecture at batch 16 on the GPU
   (paper config, VGG-16 style loss with random weights and without it; our fast recipe), alone.
2. In parallel until the budget runs out:
   - the full table 2 (``cgn reproduce table2 --device cuda``, FULL schedule), two processes per
     dataset and seed sharing one run folder (``--methods``);
   - the paper's CGN schedule (configs/<dataset>.toml, 15 epochs, style loss on VGG-16 with
     random weights: no ImageNet weights can be fetched there) on each dataset, time-boxed and
     then evaluated with the disentanglement metrics of ``cgn evaluate-cgn``.
3. The table is aggregated from the finished units, and everything small is packed into OUT.

``--quick`` shrinks everything (quick table schedule, short paper runs) to test the script on a CPU.

Data: the machine has no network, so ``$CGN_DATA`` must travel with the job, e.g. as a
git-excluded ``.gpu/data`` holding ``mnist.npz`` (re-saved with ``np.savez_compressed``: 11 MB),
``wildlife_textures/``, ``digit_classifier.safetensors`` and ``original_mnist_checkpoints/``;
then ``PYTHONPATH=src CGN_DATA=.gpu/data python3 benchmarks/gpu_session.py all ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.config import load_config
from cgn.environment import describe
from cgn.evaluation import evaluate_cgn
from cgn.files import write_text
from cgn.reproduce import DATASETS, FULL, QUICK, Reproduction
from cgn.trainer import Trainer, resolve_run_config

ROOT = Path(__file__).resolve().parents[1]
# Two processes per dataset and seed: the CGN rows, and the rows that need no CGN of ours.
METHOD_GROUPS = (("original", "original_cgn", "cgn"), ("original_gan", "authors_cgn", "original_authors_cgn", "irm"))
QUICK_METHOD_GROUPS = (("original", "original_cgn", "cgn"), ("authors_cgn",))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def images_per_second(config, run_dir: Path, steps: int) -> float:
    trainer = Trainer(config, run_dir)
    for _ in range(20):  # warm-up: allocator, cuDNN algorithm choice
        trainer.train_step()
    times = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        sync()
        times.append((time.perf_counter() - start) / steps)
    return config.train.batch_size / statistics.median(times)


def speed(args: argparse.Namespace) -> dict:
    """Standalone images/s at batch 16: paper config with and without the style loss, fast recipe."""
    rows = []
    steps = 5 if args.quick else 60
    for dataset in DATASETS:
        variants = {
            "paper_style_vgg16_random": (f"configs/{dataset}.toml", ["loss.style_network=vgg16_random"]),
            "paper_no_style": (f"configs/{dataset}.toml", ["loss.style_network=none"]),
            "fast_recipe": (f"configs/fast/{dataset}.toml", []),
        }
        for name, (path, overrides) in variants.items():
            config = resolve_run_config(load_config(ROOT / path, overrides))  # "auto" → the precision it runs in
            ips = images_per_second(config, args.work / "speed" / f"{dataset}_{name}", steps)
            rows.append(
                {
                    "dataset": dataset,
                    "variant": name,
                    "batch_size": config.train.batch_size,
                    "precision": config.train.precision,
                    "images_per_s": round(ips, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "steps_timed": steps, "note": "median of 3 timed runs after 20 warm-up steps, alone"}


def paper(args: argparse.Namespace) -> None:
    """The paper's schedule on one dataset until ``--deadline`` (epoch seconds), then its metrics."""
    overrides = ["loss.style_network=vgg16_random"] + (
        ["train.steps=60", "train.checkpoint_every=20"] if args.quick else []
    )
    config = load_config(ROOT / f"configs/{args.dataset}.toml", overrides)
    run_dir = args.work / "paper" / args.dataset
    trainer = Trainer(config, run_dir)
    chunk = 20 if args.quick else 500
    start = time.perf_counter()
    while trainer.step < trainer.total_steps and time.time() < args.deadline:
        trainer.fit(resume=True, stop_at=min(trainer.step + chunk, trainer.total_steps), progress=False)
    seconds = time.perf_counter() - start
    metrics_start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        num = 1_000 if args.quick else 10_000
        metrics = evaluate_cgn(trainer.output_generator, args.dataset, num_samples=num, fidelity=True)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    rates = [r["images_per_s"] for r in lines[1:]]  # the first window holds the warm-up
    report = {
        "dataset": args.dataset,
        "config": f"configs/{args.dataset}.toml + loss.style_network=vgg16_random",
        "steps_done": trainer.step,
        "steps_total": trainer.total_steps,
        "complete": trainer.step >= trainer.total_steps,
        "train_seconds": round(seconds, 1),
        "images_per_s_median_window": round(statistics.median(rates), 1) if rates else None,
        "projected_full_schedule_minutes": round(trainer.total_steps * seconds / max(trainer.step, 1) / 60, 1),
        "metrics": metrics,
        "metrics_num_samples": 1_000 if args.quick else 10_000,
        "metrics_seconds": round(time.perf_counter() - metrics_start, 1),
        "note": "trained alongside the table's processes on the same GPU, so images/s are shared-GPU rates",
    }
    write_text(args.work / "paper" / f"{args.dataset}.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)


def launch(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
    )


def stop(processes: dict[str, subprocess.Popen]) -> dict[str, int | None]:
    for p in processes.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    time.sleep(3)
    for p in processes.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return {name: p.wait() for name, p in processes.items()}


def start_mps() -> str:
    """CUDA MPS lets the many small processes' kernels share the GPU instead of time-slicing it."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        return "not available"
    if subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True, timeout=20).returncode != 0:
        return "failed to start"
    probe = [sys.executable, "-c", "import torch; torch.zeros(1, device='cuda'); print('ok')"]
    try:
        ok = subprocess.run(probe, capture_output=True, text=True, timeout=60).stdout.strip() == "ok"
    except subprocess.TimeoutExpired:
        ok = False
    if not ok:
        subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n", timeout=20)
        return "started, but a client could not use it: stopped"
    return "on"


def run_all(args: argparse.Namespace) -> None:
    t0 = time.time()
    out, work = args.out, args.work
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"environment": describe(), "budget_s": args.budget, "quick": args.quick}
    if torch.cuda.is_available():
        summary["gpu"] = torch.cuda.get_device_name(0)
        summary["mps"] = start_mps()
    print(json.dumps(summary), flush=True)

    summary["speed"] = speed(args)
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "10"}
    table_dir = work / "table2"
    groups = QUICK_METHOD_GROUPS if args.quick else METHOD_GROUPS
    processes: dict[str, subprocess.Popen] = {}
    launched = time.time()
    train_deadline = t0 + args.budget - args.reserve  # the paper runs stop training, then evaluate
    hard_stop = t0 + args.budget - 25  # everything still running is stopped; then the table is written
    for dataset in DATASETS:
        cmd = [
            sys.executable,
            __file__,
            "paper",
            "--dataset",
            dataset,
            "--work",
            str(work),
            "--deadline",
            str(train_deadline),
        ] + (["--quick"] if args.quick else [])
        processes[f"paper_{dataset}"] = launch(cmd, work / "logs" / f"paper_{dataset}.log", env)
    for seed in args.seeds:
        for dataset in DATASETS:
            for k, methods in enumerate(groups):
                if dataset == "colored_mnist":
                    methods = tuple(m for m in methods if "authors" not in m)
                if not methods:
                    continue
                name = f"{dataset}_seed{seed}_group{k}"
                cmd = [
                    sys.executable,
                    "-m",
                    "cgn.cli",
                    "reproduce",
                    "table2",
                    "--datasets",
                    dataset,
                    "--seeds",
                    str(seed),
                    "--methods",
                    *methods,
                    "--device",
                    "auto",
                    "--run-dir",
                    str(table_dir),
                    "--out",
                    str(table_dir / "tables" / f"{name}.json"),
                ] + (["--quick"] if args.quick else [])
                processes[name] = launch(cmd, work / "logs" / f"{name}.log", env)

    table_names = [n for n in processes if not n.startswith("paper_")]
    finished_at: dict[str, float] = {}
    while time.time() < hard_stop and len(finished_at) < len(processes):
        for name, p in processes.items():
            if p.poll() is not None and name not in finished_at:
                finished_at[name] = round(time.time() - launched, 1)
                print(f"[{time.time() - t0:6.0f} s] {name} exited {p.returncode}", flush=True)
        time.sleep(2)
    table_still_running = [n for n in table_names if n not in finished_at]
    summary["exit_codes"] = stop(processes)
    summary["finished_after_s"] = finished_at
    summary["table_processes_cut_at_deadline"] = table_still_running
    summary["parallel_phase_s"] = round(time.time() - launched, 1)

    schedule = QUICK if args.quick else FULL
    reproduction = Reproduction(table_dir, schedule, datasets=list(DATASETS), seeds=args.seeds, progress=False)
    command = "python benchmarks/gpu_session.py all" + (" --quick" if args.quick else "")
    table = reproduction.write(
        out / "table2.json", command=command, quick=args.quick, session_seconds=time.time() - launched
    )
    summary["table_wall_time_s"] = round(max(finished_at.get(n, time.time() - launched) for n in table_names), 1)
    summary["table_complete"] = not table_still_running
    summary["paper"] = {d: json.loads(p.read_text()) for d in DATASETS if (p := work / "paper" / f"{d}.json").exists()}
    summary["total_s"] = round(time.time() - t0, 1)
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    pack(work, out / "runs.tar.gz")
    print(json.dumps({k: summary[k] for k in ("table_wall_time_s", "table_complete", "total_s")}), flush=True)
    print(json.dumps(table["datasets"], indent=1), flush=True)


def pack(work: Path, archive: Path) -> None:
    """Logs, unit records, metrics, configs and counterfactual sheets: no weights, shards or samples."""
    keep = {".json", ".jsonl", ".log", ".png", ".md"}
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            small = path.is_file() and path.stat().st_size < 4_000_000
            if small and path.suffix in keep and not {"checkpoints", "samples", "speed"} & set(path.parts):
                tar.add(path, arcname=str(path.relative_to(work)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=["all", "paper"])
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--work", type=Path, default=Path("runs/gpu_session"))
    parser.add_argument("--budget", type=float, default=540, help="seconds the whole job may take")
    parser.add_argument("--reserve", type=float, default=130, help="seconds kept for evaluation and packing")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dataset", choices=DATASETS)
    parser.add_argument("--deadline", type=float, help="paper job: stop training at this time.time()")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to test this script on a CPU")
    args = parser.parse_args()
    if args.job == "paper":
        paper(args)
    else:
        run_all(args)


if __name__ == "__main__":
    reexec_with_allocator()
    main()

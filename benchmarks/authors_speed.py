"""The authors' training step against ours, on this machine, in one run.

The issue's speed goal compares our step with the authors' code "measured on a machine of this
kind": figures from another machine and day, where this shared CPU's speed wanders by a fifth
within an hour. This benchmark times the authors' own step here instead, beside ours. It needs
a checkout of their repository (``--authors-repo``, github.com/autonomousvision/
counterfactual_generative_networks) and uses their modules as they are: their CGN
(``mnists/models/cgn.py``: upsample-then-convolve blocks, the tile-and-unfold shuffler, noise
drawn inside the forward pass), their discriminators (``mnists/models/discriminator.py``) and
their ``Optimizers`` (per-parameter Adam) and initialisation (``utils/train_utils.py``). Only
``train_utils`` and ``patch_utils`` of their ``utils`` package are loaded, since its
``__init__`` also imports their plotting and evaluation code, which the step does not use. The
step is the body of their ``fit`` loop (``mnists/train_cgn.py``): zero the generator's
gradients, generate, least-squares adversarial loss plus the mask loss, backward, step; then
the discriminator on the real and the detached fake batch in two calls, backward, step. Their
perceptual and mask losses live in ``shared/losses.py``, which not every copy of their
repository includes; this benchmark writes both per PAPER.md §1.3: the mask loss as λ · mean
binary entropy in bits, and with ``--style`` the perceptual loss as their code runs it, VGG-16's
four style layers (relu1_2, relu2_2, relu3_3, relu4_3) computed and compared whatever their
weights, by per-sample Gram matrices and ``F.l1_loss`` (random VGG weights, which cost the same
as ImageNet's). Without ``--style`` it is the issue's "VGG skipped" figure (0.060 s per step on
double-colored, 0.138 s on Wildlife); with it, 0.172 s and 0.255 s.

Each measurement is a fresh worker process (this script with ``--worker``), so that each
implementation runs on the allocator it ships with: theirs on the system's malloc, as
``python mnists/train_cgn.py`` runs, ours on what ``cgn`` picks (tcmalloc where installed,
``cgn.allocator``); a second pair swaps allocators, for the comparison on equal terms. Workers
take turns for ``--rounds`` rounds; each reports the median of its timed blocks.

    python benchmarks/authors_speed.py --authors-repo ~/counterfactual_generative_networks [--style]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from train_speed import make_trainer  # benchmarks/ is on the path when run as a script
from workers import ms_per_step, run_worker

from cgn.allocator import find_library, in_use, reexec_with_allocator
from cgn.config import paper_config
from cgn.environment import matmul_gflops, write_result
from cgn.losses import STYLE_SCALE, VGG16_STYLE_LAYERS, gram, vgg16_features

# the authors' settings per dataset (PAPER.md §1.3): discriminator, ndf, init, gain, λ_mask
AUTHORS_SETTINGS = {
    "double_colored_mnist": {"disc": "linear", "ndf": 512, "init": "orthogonal", "gain": 0.2, "mask": 0.3},
    "wildlife_mnist": {"disc": "conv", "ndf": 32, "init": "normal", "gain": 0.03, "mask": 0.3},
}
# their code as the issue timed it: seconds per step at batch 16, without VGG and with the style loss
ISSUE_SECONDS = {
    "double_colored_mnist": {"no_style": 0.060, "style": 0.172},
    "wildlife_mnist": {"no_style": 0.138, "style": 0.255},
}
BATCH = 16


def load_authors_modules(repo: Path) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """Their ``mnists/models/cgn.py``, ``discriminator.py`` and ``utils/train_utils.py``."""

    def load(name: str, path: Path) -> types.ModuleType:
        if not path.is_file():
            raise SystemExit(f"{path} is missing: --authors-repo must be a checkout of the authors' repository")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    train_utils = load("authors_train_utils", repo / "utils" / "train_utils.py")
    patch_utils = load("authors_patch_utils", repo / "utils" / "patch_utils.py")
    utils = types.ModuleType("utils")  # what their modules import their helpers from
    for module in (train_utils, patch_utils):
        utils.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    sys.modules["utils"] = utils
    cgn = load("authors_cgn", repo / "mnists" / "models" / "cgn.py")
    discriminator = load("authors_discriminator", repo / "mnists" / "models" / "discriminator.py")
    return cgn, discriminator, train_utils


def perceptual_loss(weights: tuple[float, ...]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The style loss as the authors' code runs it: all four VGG-16 style layers, fp32."""
    features = vgg16_features("vgg16_random").eval().requires_grad_(False)[: max(VGG16_STYLE_LAYERS) + 1]

    def outputs(x: torch.Tensor) -> list[torch.Tensor]:
        kept = []
        for i, layer in enumerate(features):
            x = layer(x)
            if i in VGG16_STYLE_LAYERS:
                kept.append(x)
        return kept

    def loss(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = outputs(real)
        pairs = zip(weights, outputs(generated), targets, strict=True)
        return sum(w**2 * STYLE_SCALE * F.l1_loss(gram(g), gram(r)) for w, g, r in pairs)

    return loss


def authors_step(repo: Path, dataset: str, real: tuple[torch.Tensor, torch.Tensor], style: bool) -> Callable[[], None]:
    """One step of the authors' loop, on a fixed real batch."""
    cgn_module, disc_module, train_utils = load_authors_modules(repo)
    s = AUTHORS_SETTINGS[dataset]
    cgn = cgn_module.CGN(n_classes=10, latent_sz=32, ngf=32, init_type=s["init"], init_gain=s["gain"])
    Discriminator = disc_module.DiscLin if s["disc"] == "linear" else disc_module.DiscConv
    discriminator = Discriminator(n_classes=10, ndf=s["ndf"])
    opts = train_utils.Optimizers()
    opts.set("generator", cgn, lr=2e-4, betas=(0.5, 0.999))
    opts.set("discriminator", discriminator, lr=2e-4, betas=(0.5, 0.999))
    l_adv = torch.nn.MSELoss()
    l_perc = perceptual_loss(paper_config(dataset).loss.style_weights) if style else None

    def l_binary(mask: torch.Tensor) -> torch.Tensor:  # PAPER.md §1.3: λ · mean binary entropy (bits)
        return s["mask"] * torch.mean(-mask * torch.log2(mask) - (1 - mask) * torch.log2(1 - mask))

    x_gt, y_gt = real

    def step() -> None:
        valid, fake = torch.ones(len(y_gt)), torch.zeros(len(y_gt))
        opts.zero_grad(["generator"])
        y_gen = torch.randint(10, (len(y_gt),))
        mask, foreground, background = cgn(y_gen)
        x_gen = mask * foreground + (1 - mask) * background
        loss_g = l_adv(discriminator(x_gen, y_gen), valid) + l_binary(mask)
        if l_perc is not None:
            loss_g = loss_g + l_perc(x_gen, x_gt)
        loss_g.backward()
        opts.step(["generator"], False)
        opts.zero_grad(["discriminator"])
        loss_d = (l_adv(discriminator(x_gt, y_gt), valid) + l_adv(discriminator(x_gen.detach(), y_gen), fake)) / 2
        loss_d.backward()
        opts.step(["discriminator"], False)

    return step


def worker(args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        precision = "fp32" if args.worker == "authors" else args.worker.removeprefix("ours_")
        # the authors' worker takes only a real batch from it: no style network to build there
        style = args.style and args.worker != "authors"
        trainer = make_trainer(args.dataset, BATCH, style, precision, Path(tmp))
        if args.worker == "authors":
            batch = trainer.real_batch(0)
            real = (batch["image"].float().contiguous(), batch["label"])
            step = authors_step(args.authors_repo, args.dataset, real, args.style)
        else:
            step = trainer.train_step
        ms = ms_per_step(step, args.warmup, args.steps, args.blocks)
    return {"implementation": args.worker, "allocator": in_use(), "ms_per_step": ms}


def worker_arguments(args: argparse.Namespace, implementation: str) -> list[str]:
    arguments = [
        __file__,
        "--worker",
        implementation,
        "--dataset",
        args.dataset,
        "--authors-repo",
        str(args.authors_repo),
    ]
    arguments += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--blocks", str(args.blocks)]
    return arguments + (["--style"] if args.style else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors-repo", type=Path, required=True, help="a checkout of the authors' repository")
    parser.add_argument("--dataset", default="double_colored_mnist", choices=list(AUTHORS_SETTINGS))
    parser.add_argument("--style", action="store_true", help="with the style loss (VGG-16, random weights)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--worker", choices=["authors", "ours_fp32", "ours_bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="default: results/authors_speed_<dataset>.json")
    args = parser.parse_args()
    args.authors_repo = args.authors_repo.expanduser().resolve()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    needed = [args.authors_repo / f for f in ("mnists/models/cgn.py", "utils/train_utils.py")]
    if not all(path.is_file() for path in needed):
        raise SystemExit(f"{args.authors_repo} is not a checkout of the authors' repository (no {needed[0]})")
    fast = "tcmalloc" if find_library("tcmalloc") else "system"
    # (implementation, allocator): each as it ships first, then on the other's allocator
    variants = [("authors", "system"), ("ours_bf16", fast), ("ours_fp32", fast)]
    if fast != "system":
        variants += [("authors", fast), ("ours_bf16", "system"), ("ours_fp32", "system")]
    matmul_before = matmul_gflops("bf16")
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for implementation, allocator in variants:
            result = run_worker(worker_arguments(args, implementation), allocator)
            if result["allocator"] != allocator:
                raise SystemExit(f"worker {implementation} ran on {result['allocator']}, not {allocator}")
            times[implementation, allocator].append(statistics.median(result["ms_per_step"]))
            print(
                f"round {round_ + 1} {implementation} on {allocator}: {times[implementation, allocator][-1]:.2f} ms/step"
            )
    rows = []
    authors_shipped = statistics.median(times["authors", "system"])
    for (implementation, allocator), ms in times.items():
        median = statistics.median(ms)
        same_allocator_authors = statistics.median(times["authors", allocator])
        rows.append(
            {
                "implementation": implementation,
                "allocator": allocator,
                "ms_per_step": round(median, 2),
                "ms_per_step_by_round": [round(m, 2) for m in ms],
                "images_per_s": round(BATCH * 1000 / median, 1),
                "speedup_vs_authors_as_shipped": round(authors_shipped / median, 3),
                "speedup_vs_authors_same_allocator": round(same_allocator_authors / median, 3),
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "ms_per_step_by_round"}))
    result = {
        "dataset": args.dataset,
        "batch_size": BATCH,
        "style_loss": args.style,
        "rows": rows,
        "issue_authors_seconds_per_step": ISSUE_SECONDS[args.dataset]["style" if args.style else "no_style"],
        "notes": (
            "the authors' step: their CGN, discriminator, Optimizers and init from their repository, fp32, with "
            "the mask loss (and with style_loss the perceptual loss) per PAPER.md; ours: the paper config as cgn "
            "train-cgn runs it; each "
            "figure is the median over rounds of a fresh worker process's median over timed blocks; "
            "speedup_vs_authors_as_shipped divides the authors' step on the system's malloc by the row's"
        ),
        "machine_matmul_gflops_bf16": {"before": matmul_before, "after": matmul_gflops("bf16")},
        "steps_per_block": args.steps,
        "blocks": args.blocks,
        "rounds": args.rounds,
    }
    out = args.out or Path(f"results/authors_speed_{args.dataset}{'_style' if args.style else ''}.json")
    write_result(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

"""Training images per second of the paper's MNIST CGN on this machine, and where a step's time goes.

For each dataset × batch size × style loss on/off × precision, runs the real training step
(`Trainer.train_step`) and reports the median of 3 timed blocks, twice in the same run, the
blocks alternating: as the trainer runs it ("ours": the up-blocks computed at the input's
size (``model.upsample_conv = "phase"``, as in the fast recipes; the paper's configs keep
"interpolate"), channels-last convolutions, the fused Adam, the chunked Gram-L1 style loss,
one autocast region for both updates with the generator's backward limited to its own
parameters, real and fake scored in one call by a discriminator without BatchNorm, the
shuffler's gradient as a gather) and as a plain PyTorch port runs it ("plain",
:func:`plain_train_step`: upsampling then convolving, contiguous tensors, the per-parameter
Adam loop, whole-batch Gram matrices compared by ``F.l1_loss``, an autocast region per update,
a full backward of the generator's loss, two discriminator calls, autograd's ``index_put`` for
the shuffler). The style loss uses VGG-16 with random weights (the same cost as ImageNet
weights). A profile (ours, batch 16) splits a step into data, generator forward,
discriminator, style loss, backward and optimiser.

The machine's speed wanders (a shared 2-core CPU): the file also records a 2048² matrix
product's GFLOP/s before and after the run (``machine_matmul_gflops``).

Writes results/train_speed.json (--out). Needs prepared data (`cgn data prepare`). bf16 rows are skipped on
a device without native bf16 kernels (their steps take 10× or more the fp32 time there).
Usage: python benchmarks/train_speed.py [--steps 30] [--datasets ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from cgn import mechanisms
from cgn import trainer as trainer_module
from cgn.allocator import reexec_with_allocator
from cgn.config import paper_config
from cgn.environment import matmul_gflops, write_result
from cgn.losses import StyleLoss, discriminator_adversarial_loss, gram
from cgn.precision import bf16_is_native
from cgn.trainer import Trainer, pick_device

# The authors' code on a machine of this kind (from the issue): seconds per step at batch 16.
AUTHORS = {
    "double_colored_mnist": {"style": 0.172, "no_style": 0.060},
    "wildlife_mnist": {"style": 0.255, "no_style": 0.138},
}


def make_trainer(
    dataset: str, batch: int, style: bool, precision: str, run_dir: Path, upsample_conv: str = "phase"
) -> Trainer:
    config = paper_config(
        dataset,
        model={"upsample_conv": upsample_conv},
        loss={"style_network": "vgg16_random" if style else "none"},
        train={"batch_size": batch, "precision": precision, "steps": 10_000},
    )
    trainer = Trainer(config, run_dir)
    trainer._prepare_run_dir(resume=False)
    return trainer


class PlainStyleLoss(StyleLoss):
    """The style loss as written in the paper: whole-batch (B, C, C) Grams, then ``F.l1_loss``;
    every convolution by ``F.conv2d``."""

    small_map_matmul = False

    def forward(self, generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = {i: gram(f) for i, f in self.feature_maps(real).items()}
        current = {i: gram(f) for i, f in self.feature_maps(generated).items()}
        return sum(w * F.l1_loss(current[i], target[i]) for i, w in self.layer_weights.items())


def make_plain(trainer: Trainer) -> Trainer:
    """The same trainer as a plain port runs it: contiguous convolutions, the per-parameter Adam,
    the plain style loss."""
    t = trainer.config.train
    if trainer.loss.style is not None:
        trainer.loss.style = PlainStyleLoss(trainer.config.loss.style_weights, trainer.loss.style.features)
    for module in (trainer.generator, trainer.discriminator, trainer.loss):
        module.to(memory_format=torch.contiguous_format)
    trainer.opt_g = torch.optim.Adam(trainer.generator.parameters(), lr=t.lr, betas=t.betas, foreach=False)
    trainer.opt_d = torch.optim.Adam(trainer.discriminator.parameters(), lr=t.lr, betas=t.betas, foreach=False)
    return trainer


def plain_circular_shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The shuffler's shift as a plain port writes it: a 3-d advanced index, whose gradient
    autograd builds with an accumulating ``index_put``."""
    b, _, h, w = x.shape
    rows = (dy[:, None] + torch.arange(h, device=x.device)) % h  # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=x.device)) % w  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@contextlib.contextmanager
def plain_shuffler():
    """While inside, the shuffler runs :func:`plain_circular_shift`."""
    with mock.patch.object(mechanisms, "circular_shift", plain_circular_shift):
        yield


def plain_train_step(trainer: Trainer) -> None:
    """The paper's training step as a plain port writes it: an autocast region per update (so
    the critic's weights are cast to bf16 in each), a full backward of the generator's loss
    (which builds the critic's weight gradients too, discarded by its ``zero_grad``), and the
    real and fake batches scored in two critic calls."""
    config = trainer.config
    assert not (config.loss.shape_view_weight or config.loss.mode_seeking_weight or config.train.ema_decay)
    real = trainer.real_batch(trainer.step)
    x_real, y_real = real["image"], real["label"]
    y_gen = torch.randint(0, config.model.num_classes, (len(y_real),), generator=trainer.rng)
    noise = trainer.generator.sample_noise(len(y_real), trainer.rng)
    trainer.opt_g.zero_grad(set_to_none=True)
    with trainer.autocast(), plain_shuffler():
        out = trainer.generator(y_gen, noise=noise, generator=trainer.rng)
        d_fake = trainer.discriminator(out.image, y_gen)
        loss_g, _ = trainer.loss(d_fake.float(), out.mask.float(), out.image, x_real)
    loss_g.backward()
    trainer.opt_g.step()
    trainer.opt_d.zero_grad(set_to_none=True)
    with trainer.autocast():
        d_real, d_fake = trainer.discriminator(x_real, y_real), trainer.discriminator(out.image.detach(), y_gen)
        loss_d = discriminator_adversarial_loss(d_real.float(), d_fake.float())
    loss_d.backward()
    trainer.opt_d.step()
    trainer.step += 1


def seconds_per_step(ours: Trainer, plain: Trainer, steps: int, repeats: int = 3) -> tuple[float, float]:
    """Median seconds per step of both trainers, timed in alternating blocks (the machine's
    speed drifts by tens of percent within minutes)."""
    for _ in range(5):
        ours.train_step()
        plain_train_step(plain)
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(repeats):
        for name, step in (("ours", ours.train_step), ("plain", lambda: plain_train_step(plain))):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps)
    return statistics.median(times["ours"]), statistics.median(times["plain"])


def phase_profile(trainer: Trainer, steps: int) -> dict[str, float]:
    """Milliseconds per step in each phase of the training step (same work as train_step)."""
    phases: dict[str, float] = {}

    def tick(name: str, start: float) -> float:
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + (now - start) * 1000 / steps
        return now

    g, d, loss = trainer.generator, trainer.discriminator, trainer.loss
    for _ in range(steps):
        t = time.perf_counter()
        real = trainer.real_batch(trainer.step)
        x_real, y_real = real["image"], real["label"]
        y_gen = torch.randint(0, 10, (len(y_real),), generator=trainer.rng)
        noise = g.sample_noise(len(y_real), trainer.rng)
        t = tick("data", t)
        trainer.opt_g.zero_grad(set_to_none=True)
        with trainer.autocast():  # one region, as in train_step
            out = g(y_gen, noise=noise, generator=trainer.rng)
            t = tick("generator_forward", t)
            d_fake = d(out.image, y_gen)
            t = tick("discriminator_forward_g_step", t)
            total, _ = loss(d_fake.float(), out.mask.float(), out.image, x_real)
            t = tick("style_and_other_losses", t)
            reuse = trainer.reuse_fake_scores
            with trainer.autocast(enabled=False):
                total.backward(inputs=trainer.generator_parameters, retain_graph=reuse)
            t = tick("generator_backward", t)
            trainer.opt_d.zero_grad(set_to_none=True)
            fakes = (out.image.detach(), y_gen)
            d_real, d_fake, _ = trainer_module.critic_scores(d, (x_real, y_real), fakes, d_fake if reuse else None)
            loss_d = discriminator_adversarial_loss(d_real.float(), d_fake.float())
        loss_d.backward(inputs=trainer.critic_parameters)
        trainer.opt_d.step()
        t = tick("discriminator_step", t)
        trainer.opt_g.step()
        tick("generator_optimizer", t)
        trainer.step += 1
    total_ms = sum(phases.values())
    return {k: {"ms": round(v, 2), "share": round(v / total_ms, 3)} for k, v in phases.items()}


def machine_speed(device: torch.device) -> dict[str, float]:
    """GFLOP/s of a 2048² matrix product on the CPU now (the issue's machine: 220 fp32, 940 bf16)."""
    if device.type != "cpu":
        return {}
    return {p: matmul_gflops(p) for p in ("fp32", "bf16") if p == "fp32" or bf16_is_native(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--datasets", nargs="+", default=list(AUTHORS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--out", type=Path, default=Path("results/train_speed.json"))
    args = parser.parse_args()
    rows, profiles = [], {}
    device = pick_device("auto")
    speed_before = machine_speed(device)
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            for batch in args.batch_sizes:
                for style in (True, False):
                    for precision in args.precisions:
                        if precision == "bf16" and not bf16_is_native(device):
                            print(f"skipped bf16: {device} has no native bf16 kernels (cgn.precision)", flush=True)
                            continue
                        trainer = make_trainer(dataset, batch, style, precision, Path(tmp) / f"{len(rows)}")
                        plain = make_plain(
                            make_trainer(dataset, batch, style, precision, Path(tmp) / f"p{len(rows)}", "interpolate")
                        )
                        s, s_plain = seconds_per_step(trainer, plain, max(5, args.steps * 16 // batch))
                        row = {
                            "dataset": dataset,
                            "batch_size": batch,
                            "style_loss": style,
                            "precision": precision,
                            "seconds_per_step": round(s, 4),
                            "images_per_s": round(batch / s, 1),
                            "plain_images_per_s": round(batch / s_plain, 1),
                        }
                        ref = AUTHORS.get(dataset, {}).get("style" if style else "no_style")
                        if ref and batch == 16:
                            row["authors_images_per_s"] = round(16 / ref, 1)
                            row["speedup_vs_authors"] = round(ref / s, 2)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        if batch == 16:
                            key = f"{dataset}/batch16/{'style' if style else 'no_style'}/{precision}"
                            profiles[key] = phase_profile(trainer, args.steps)
    result = {
        "machine_matmul_gflops": {"before": speed_before, "after": machine_speed(device)},
        "rows": rows,
        "profile_ms_per_step": profiles,
        "authors_seconds_per_step_batch16": AUTHORS,
        "notes": "style loss = VGG-16 with random weights (same cost as ImageNet weights); medians of 3 "
        "timed blocks, ours and plain alternating",
        "torch_threads": torch.get_num_threads(),
        "native_bf16": bf16_is_native(device),
    }
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()

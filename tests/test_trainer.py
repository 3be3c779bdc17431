"""The trainer: run directory, checkpoints with embedded config, exact resume, crash safety."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cgn.checkpoint import load_cgn, read_weights, save_weights
from cgn.config import load_config
from cgn.data.double_colored import DoubleColoredMNIST
from cgn.discriminator import build_discriminator
from cgn.errors import CheckpointError, ConfigError
from cgn.losses import discriminator_adversarial_loss, generator_adversarial_loss
from cgn.model import CGN, recalibrate_batchnorm
from cgn.trainer import (
    Trainer,
    WeightAverage,
    batch_independent,
    critic_scores,
    speed_row,
    train_cgn,
    training_speed,
)
from tests.conftest import REPO


@pytest.fixture
def debug_config():
    return load_config(
        REPO / "configs" / "debug.toml",
        ["train.steps=8", "train.checkpoint_every=4", "train.sample_every=4", "train.log_every=2"],
    )


def weights(path):
    return read_weights(path)[0]


def test_a_run_writes_its_artefacts(tmp_path, data_root, debug_config):
    result = train_cgn(debug_config, tmp_path / "run", data_root=data_root, progress=False)
    run = tmp_path / "run"
    assert result.steps == 8 and (run / "done").exists()
    assert json.loads((run / "config.json").read_text()) == debug_config.to_dict()
    assert "versions" in json.loads((run / "environment.json").read_text())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6, 8] and {"g", "d", "adv", "mask", "images_per_s"} <= set(lines[0])
    assert (run / "samples" / "step_0000004.png").exists() and (run / "samples" / "counterfactuals_shape3.png").exists()
    assert (run / "samples" / "variety.png").exists()
    model, config, metadata = load_cgn(result.checkpoint)
    assert config == debug_config and metadata["step"] == "8" and not model.training


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.ema_decay=0.0"],
        ["train.ema_decay=0.9", "train.frame_init=true", "loss.mode_seeking_weight=0.1"],
        # The schedules change at the resume point (step 4 of 8).
        ["train.lr_decay_start=0.25", "loss.mode_seeking_weight=0.1", "loss.mode_seeking_until=0.5"],
        ["loss.shape_view_weight=0.5", "loss.shape_view_distance=mahalanobis", "train.d_grad_clip=1.0"],
        ["loss.shape_view_weight=0.5", "loss.shape_view_mismatch_weight=1.0", "loss.mismatch_weight=0.5"],
        # The matching-aware terms switch on at step 3, before the resume point.
        ["loss.shape_view_weight=0.5", "loss.shape_view_mismatch_weight=1.0", "loss.mismatch_start=0.375"],
        ["train.mechanism_lr_scale=[1.0, 0.5, 2.0]", "train.lr_decay_start=0.25"],
        # The lazy R1 penalty falls on steps 0, 3 and 6: the resume at step 4 is off its beat.
        ["loss.r1_weight=1.0", "loss.r1_every=3"],
        ["loss.texture_mode_seeking_weight=0.01"],
        ["loss.texture_mode_seeking_weight=0.01", "loss.mode_seeking_weight=0.1", "loss.mode_seeking_until=0.5"],
        ["loss.label_info_weight=1.0", "train.ema_decay=0.9"],
        # The reader reaches the generator from step 3, before the resume point.
        ["loss.label_info_weight=1.0", "loss.label_info_start=0.375", "loss.label_info_view=map"],
    ],
)
def test_resume_is_exact(tmp_path, data_root, debug_config, overrides):
    config = debug_config.override(*overrides)
    ema_decay = config.train.ema_decay
    train_cgn(config, tmp_path / "straight", data_root=data_root, progress=False)
    train_cgn(config, tmp_path / "resumed", data_root=data_root, progress=False, stop_at=4)
    assert not (tmp_path / "resumed" / "done").exists()
    train_cgn(config, tmp_path / "resumed", data_root=data_root, progress=False, resume=True)
    names = ["cgn.safetensors", "checkpoints/step_0000008/discriminator.safetensors"]
    if ema_decay:
        names.append("checkpoints/step_0000008/average.safetensors")
    if config.loss.shape_view_weight:
        names.append("checkpoints/step_0000008/shape_discriminator.safetensors")
    if config.loss.label_info_weight:
        names.append("checkpoints/step_0000008/label_reader.safetensors")
    for name in names:
        a, b = weights(tmp_path / "straight" / name), weights(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert ("mode_seeking" in records[0]) == bool(config.loss.mode_seeking_weight)
    assert ("texture_mode_seeking" in records[-1]) == bool(config.loss.texture_mode_seeking_weight)
    assert ("d_shape_view" in records[0]) == bool(config.loss.shape_view_weight)
    assert ("d_shape_mismatch" in records[-1]) == bool(config.loss.shape_view_mismatch_weight)
    assert ("d_mismatch" in records[0]) == bool(config.loss.mismatch_weight)
    assert ("label_info" in records[0]) == bool(config.loss.label_info_weight)


def test_the_weight_average_follows_the_live_weights_and_is_what_the_run_returns(tmp_path, data_root, debug_config):
    live = torch.nn.Linear(2, 2)
    average = WeightAverage(live, decay=0.75)
    before = live.weight.detach().clone()
    with torch.no_grad():
        live.weight.add_(4.0)
    average.update(live, updates_so_far=100)  # past the warm-up: decay 0.75
    assert torch.allclose(average.model.weight, before + 1.0) and not average.model.weight.requires_grad
    average.update(live, updates_so_far=0)  # warm-up: decay 0.1
    assert torch.allclose(average.model.weight, before + 1.0 + 0.9 * 3.0)

    config = debug_config.override("train.ema_decay=0.5")
    result = train_cgn(config, tmp_path / "run", data_root=data_root, progress=False)
    final = weights(result.checkpoint)
    last = tmp_path / "run" / "checkpoints" / "step_0000008"
    averaged, raw = weights(last / "average.safetensors"), weights(last / "generator.safetensors")
    statistics = {k for k in final if "running_" in k}  # recalibrated for the averaged weights
    counters = {k for k in final if k.endswith("num_batches_tracked")}
    assert statistics and all(torch.equal(final[k], averaged[k]) for k in final.keys() - statistics - counters)
    assert not any(torch.equal(final[k], averaged[k]) for k in statistics)
    assert not torch.equal(final["shape.fc.weight"], raw["shape.fc.weight"])
    # Loaded on its own, a checkpoint's average gets the statistics the run's output got.
    state, metadata = read_weights(last / "average.safetensors")
    legacy = tmp_path / "old_run" / "step_0000008" / "average.safetensors"  # before the average's own kind
    legacy.parent.mkdir(parents=True)
    save_file(state, str(legacy), metadata={**metadata, "kind": "cgn"})
    for path in (last / "average.safetensors", legacy):
        loaded = load_cgn(path)[0].state_dict()
        assert loaded.keys() == final.keys()
        assert all(torch.allclose(loaded[k].float(), final[k].float(), rtol=1e-4, atol=1e-6) for k in final), path


def test_with_warm_up_2_the_average_starts_as_the_running_mean(debug_config):
    live = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(live, decay=0.999, warmup=2)
    seen = [live.weight.item()]
    for n, value in enumerate([3.0, -1.0, 5.0, 2.0]):
        with torch.no_grad():
            live.weight.fill_(value)
        average.update(live, updates_so_far=n)
        seen.append(value)
        assert average.model.weight.item() == pytest.approx(sum(seen) / len(seen))
    # The default warm-up keeps the decay under 0.999 for 8,990 updates.
    assert (1 + 8_989) / (10 + 8_989) < 0.999 <= (1 + 8_990) / (10 + 8_990)
    with pytest.raises(ConfigError, match="ema_warmup"):
        debug_config.override("train.ema_warmup=1")


def test_recalibrated_statistics_are_those_of_the_model_itself(debug_config):
    model = CGN(debug_config.model)
    calibrated = recalibrate_batchnorm(model, torch.Generator().manual_seed(0), batches=3, batch_size=8)
    g = torch.Generator().manual_seed(0)
    norm = model.texture.out_norm
    expected = []
    hook = norm.register_forward_hook(lambda m, inputs, out: expected.append(inputs[0].mean((0, 2, 3))))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            labels = torch.randint(0, 10, (8,), generator=g)
            model(labels, noise=model.sample_noise(8, g), generator=g)
    hook.remove()
    assert torch.allclose(calibrated.texture.out_norm.running_mean, torch.stack(expected).mean(0), atol=1e-6)
    assert not calibrated.training and calibrated.texture.out_norm.momentum == norm.momentum


def test_frame_init_starts_the_background_at_the_real_frame_colour(tmp_path, data_root, debug_config):
    paper = Trainer(debug_config, tmp_path / "paper", data_root=data_root)
    assert torch.equal(paper.generator.background.out_norm.bias, torch.zeros(3))
    config = debug_config.override("train.frame_init=true", "train.ema_decay=0.9")
    trainer = Trainer(config, tmp_path / "run", data_root=data_root)
    # debug: double-colored MNIST, whose frame shows the background colour of the image's class
    expected = (DoubleColoredMNIST.background_colors * 2 - 1).mean(0).clamp(-0.95, 0.95)
    assert torch.allclose(torch.tanh(trainer.generator.background.out_norm.bias), expected, atol=0.02)
    assert torch.equal(trainer.average.model.background.out_norm.bias, trainer.generator.background.out_norm.bias)


RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def two_region_step(trainer: Trainer) -> None:
    """The training step as two autocast regions, the critics' weights switched off for the
    generator's loss: the reference for the one-region step (the paper's losses plus the
    shape critic and the moving average)."""
    critics = [trainer.discriminator, trainer.shape_discriminator]
    real = trainer.real_batch(trainer.step)
    x_real, y_real = real["image"], real["label"]
    y_gen = torch.randint(0, 10, (len(y_real),), generator=trainer.rng)
    noise = trainer.generator.sample_noise(len(y_real), trainer.rng)
    trainer.opt_g.zero_grad(set_to_none=True)
    for p in (p for c in critics for p in c.parameters()):
        p.requires_grad_(False)
    with trainer.autocast():
        out = trainer.generator(y_gen, noise=noise, generator=trainer.rng)
        loss_g, _ = trainer.loss(trainer.discriminator(out.image, y_gen).float(), out.mask.float(), out.image, x_real)
        fake_view = trainer.shape_view(trainer.shape_critic_input(out))
        loss_g = loss_g + 0.5 * generator_adversarial_loss(trainer.shape_discriminator(fake_view, y_gen).float())
    for p in (p for c in critics for p in c.parameters()):
        p.requires_grad_(True)
    loss_g.backward()
    trainer.opt_g.step()
    trainer.average.update(trainer.generator, trainer.step)
    trainer.opt_d.zero_grad(set_to_none=True)
    trainer.opt_s.zero_grad(set_to_none=True)
    with trainer.autocast():
        d_real, d_fake, _ = critic_scores(trainer.discriminator, (x_real, y_real), (out.image.detach(), y_gen))
        s_real, s_fake, _ = critic_scores(
            trainer.shape_discriminator, (trainer.shape_view(x_real), y_real), (fake_view.detach(), y_gen)
        )
        loss_d = discriminator_adversarial_loss(d_real.float(), d_fake.float())
        loss_d = loss_d + discriminator_adversarial_loss(s_real.float(), s_fake.float())
    loss_d.backward()
    trainer.opt_d.step()
    trainer.opt_s.step()
    trainer.step += 1


BATCHNORM_CRITICS = ["model.discriminator=conv_projection", "model.shape_discriminator=conv", "model.shape_ndf=8"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.precision=fp32"],
        ["train.precision=bf16", "loss.style_network=vgg16_random"],
        ["train.precision=fp32", *BATCHNORM_CRITICS],
        ["train.precision=bf16", *BATCHNORM_CRITICS],
    ],
)
def test_the_one_region_step_equals_two_regions_with_frozen_critics(tmp_path, data_root, debug_config, overrides):
    """Also the reuse of a BatchNorm critic's scores of the fakes (critic_scores): the reference
    scores them again, so only the BatchNorm running statistics, which a training critic never
    reads, may differ."""
    config = debug_config.override(*overrides, "loss.shape_view_weight=0.5", "train.ema_decay=0.9")
    one, two = (Trainer(config, tmp_path / name, data_root=data_root) for name in ("one", "two"))
    for _ in range(3):
        torch.manual_seed(7)  # dropout
        parts = one.train_step()
        torch.manual_seed(7)
        two_region_step(two)
    assert torch.isfinite(parts["g"])
    for name in ("generator", "discriminator", "shape_discriminator"):
        a, b = getattr(one, name).state_dict(), getattr(two, name).state_dict()
        compared = [k for k in a if name == "generator" or not k.endswith(RUNNING_STATISTICS)]
        assert all(torch.equal(a[k], b[k]) for k in compared), name
    assert all(
        torch.equal(p, q) for p, q in zip(one.average.model.parameters(), two.average.model.parameters(), strict=True)
    )


@pytest.mark.parametrize("name", ["linear", "linear_projection", "conv", "conv_projection"])
def test_a_critic_scores_real_and_fake_as_two_separate_calls_would(debug_config, name):
    critic = build_discriminator(debug_config.model.__class__(discriminator=name, ndf=16)).eval()
    real = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    fake = (torch.randn(4, 3, 32, 32), torch.tensor([4, 5, 6, 7]))
    d_real, d_fake, _ = critic_scores(critic, real, fake)
    assert torch.allclose(d_real, critic(*real), atol=1e-6) and torch.allclose(d_fake, critic(*fake), atol=1e-6)
    # BatchNorm's training statistics are per batch: such a critic must get two calls.
    assert batch_independent(critic) == name.startswith("linear")
    critic.train()
    if not batch_independent(critic):
        assert torch.equal(critic_scores(critic, real, fake).fake, critic(*fake))
    # Scores of the fakes from an earlier call: a BatchNorm critic reuses them; a critic
    # without BatchNorm scores both batches in its one call anyway.
    earlier = torch.full((4,), 7.0)
    reused = torch.equal(critic_scores(critic, real, fake, earlier).fake, earlier)
    assert reused != batch_independent(critic)


@pytest.mark.parametrize("name", ["linear", "linear_projection", "conv", "conv_projection"])
def test_wrong_label_scores_and_their_gradients_are_those_of_a_separate_call(debug_config, name):
    """A projection critic takes the matching-aware scores from the real batch's features
    (critic_scores); the real and fake scores do not change, and the critic's gradient is the
    same as with a separate call on the real batch (eval mode: no dropout; a BatchNorm critic
    in train mode sees the same batch either way)."""
    torch.manual_seed(0)
    critic = build_discriminator(debug_config.model.__class__(discriminator=name, ndf=16))
    critic.train(not batch_independent(critic))
    real = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    fake = (torch.randn(4, 3, 32, 32), torch.tensor([4, 5, 6, 7]))
    wrong = torch.tensor([5, 9, 0, 1])
    assert hasattr(critic, "features") == name.endswith("projection")
    scores, grads = [], []
    for reuse in (True, False):
        critic.zero_grad()
        d_real, d_fake, d_wrong = critic_scores(critic, real, fake, wrong_labels=wrong, reuse_features=reuse)
        (d_real.sum() - d_fake.sum() + 2 * d_wrong.sum()).backward()
        scores.append((d_real, d_fake, d_wrong))
        grads.append([p.grad.clone() for p in critic.parameters()])
    (reused_real, reused_fake, reused_wrong), (real_scores, fake_scores, wrong_scores) = scores
    assert torch.equal(reused_real, real_scores) and torch.equal(reused_fake, fake_scores)
    assert torch.equal(critic_scores(critic, real, fake).real, real_scores)
    assert torch.allclose(reused_wrong, wrong_scores, atol=1e-6)
    assert all((a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-7 for a, b in zip(*grads, strict=True))  # rounding
    assert critic_scores(critic, real, fake).wrong is None


def test_a_bf16_run_keeps_the_frozen_style_network_in_bf16_with_the_same_loss(tmp_path, data_root, debug_config):
    config = debug_config.override("loss.style_network=vgg16_random", "train.precision=bf16")
    trainer = Trainer(config, tmp_path / "run", data_root=data_root)
    features = trainer.loss.style.features
    assert {p.dtype for p in features.parameters()} == {torch.bfloat16}
    generated, real = torch.randn(2, 3, 32, 32, requires_grad=True), torch.randn(2, 3, 32, 32)
    losses, grads = [], []
    for style in (trainer.loss.style, copy.deepcopy(trainer.loss.style).float()):  # bf16, then autocast's casts
        with trainer.autocast():
            losses.append(style(generated, real))
        grads.append(torch.autograd.grad(losses[-1], generated)[0])
    assert torch.equal(losses[0], losses[1]) and torch.equal(grads[0], grads[1])


def test_the_learning_rate_decays_to_zero_and_the_mode_seeking_term_stops_on_schedule(
    tmp_path, data_root, debug_config
):
    config = debug_config.override(
        "train.lr=1e-3", "train.lr_decay_start=0.5", "loss.mode_seeking_weight=0.1", "loss.mode_seeking_until=0.75"
    )
    trainer = Trainer(config, tmp_path / "run", data_root=data_root)
    assert [trainer.learning_rate(s) for s in range(8)] == pytest.approx([1e-3] * 4 + [1e-3, 7.5e-4, 5e-4, 2.5e-4])
    seen = []
    for _ in range(8):
        parts = trainer.train_step()
        seen.append(("mode_seeking" in parts, trainer.opt_g.param_groups[0]["lr"], trainer.opt_d.param_groups[0]["lr"]))
    assert [on for on, _, _ in seen] == [True] * 6 + [False] * 2
    assert (
        [g for _, g, _ in seen]
        == [d for _, _, d in seen]
        == pytest.approx([trainer.learning_rate(s) for s in range(8)])
    )
    # The defaults are the paper's constant rate, with the term (when on) throughout.
    plain = Trainer(debug_config.override("loss.mode_seeking_weight=0.1"), tmp_path / "plain", data_root=data_root)
    assert plain.learning_rate(7) == debug_config.train.lr and plain.mode_seeking_on
    plain.step = 7
    assert plain.mode_seeking_on
    for bad, message in [
        ("train.lr_decay_start=1.5", "lr_decay_start"),
        ("loss.mode_seeking_until=0", "mode_seeking_until"),
    ]:
        with pytest.raises(ConfigError, match=message):
            debug_config.override(bad)


def test_the_matching_aware_terms_switch_on_at_mismatch_start(tmp_path, data_root, debug_config):
    config = debug_config.override(
        "loss.shape_view_weight=0.5",
        "loss.shape_view_mismatch_weight=1.0",
        "loss.mismatch_weight=0.5",
        "loss.mismatch_start=0.5",
    )
    trainer = Trainer(config, tmp_path / "run", data_root=data_root)
    seen = [sorted(k for k in trainer.train_step() if "mismatch" in k) for _ in range(8)]
    assert seen == [[]] * 4 + [["d_mismatch", "d_shape_mismatch"]] * 4


def test_the_lazy_r1_penalty_falls_on_its_beat_and_moves_only_the_critic(tmp_path, data_root, debug_config):
    plain = Trainer(debug_config, tmp_path / "plain", data_root=data_root)
    lazy = Trainer(debug_config.override("loss.r1_weight=10", "loss.r1_every=2"), tmp_path / "r1", data_root=data_root)
    seen = []
    for trainer in (plain, lazy):
        torch.manual_seed(0)  # the critic's dropout draws from the global stream (fit seeds it)
        seen.append("r1" in trainer.train_step())
    # Step 0: the same generator update, a different critic update.
    for a, b in zip(plain.generator.state_dict().values(), lazy.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(plain.discriminator.parameters(), lazy.discriminator.parameters(), strict=True)
    )
    seen += ["r1" in lazy.train_step() for _ in range(3)]
    assert seen == [False, True, False, True, False]


def test_each_mechanism_learns_at_its_own_rate_through_the_decay(tmp_path, data_root, debug_config):
    config = debug_config.override(
        "train.lr=1e-3", "train.mechanism_lr_scale=[1.0, 0.25, 4.0]", "train.lr_decay_start=0.5"
    )
    trainer = Trainer(config, tmp_path / "run", data_root=data_root)
    before = copy.deepcopy(trainer.generator.state_dict())
    trainer.train_step()
    # Adam's first update moves a weight by lr * g / (|g| + eps): at most lr, and nearly lr
    # for most weights, so each mechanism's largest move is its own rate.
    for name, scale in [("shape", 1.0), ("texture", 0.25), ("background", 4.0), ("label_embedding", 1.0)]:
        moved = max(
            (param.detach() - before[f"{name}.{key}"]).abs().max().item()
            for key, param in getattr(trainer.generator, name).named_parameters()
        )
        assert moved == pytest.approx(1e-3 * scale, rel=0.01), name
    trainer.step = 6  # three quarters in: every rate at half its value
    trainer.set_learning_rate()
    assert [g["lr"] for g in trainer.opt_g.param_groups] == pytest.approx([5e-4, 1.25e-4, 2e-3, 5e-4])
    # The default keeps the plain single-group optimiser that earlier checkpoints hold.
    assert len(Trainer(debug_config, tmp_path / "plain", data_root=data_root).opt_g.param_groups) == 1
    with pytest.raises(ConfigError, match="mechanism_lr_scale"):
        debug_config.override("train.mechanism_lr_scale=[1.0, 0.0, 1.0]")
    with pytest.raises(ConfigError, match="needs a CGN with three mechanisms"):
        Trainer(config.override("model.generator=cgan"), tmp_path / "gan", data_root=data_root)


def test_a_step_leaves_the_discriminator_trainable_with_gradients(tmp_path, data_root, debug_config):
    trainer = Trainer(debug_config, tmp_path / "run", data_root=data_root)
    trainer.train_step()
    assert all(p.requires_grad and p.grad is not None for p in trainer.discriminator.parameters())


@pytest.mark.parametrize("view", ["map", "visible"])
def test_the_label_reader_learns_with_the_generator_from_the_texture_and_background_maps(
    tmp_path, data_root, debug_config, view
):
    config = debug_config.override("loss.label_info_weight=1", f"loss.label_info_view={view}")
    trainer = Trainer(config, tmp_path / "run", data_root=data_root)
    labels = torch.arange(10)
    out = trainer.generator(labels, noise=trainer.generator.sample_noise(10, trainer.rng))
    foreground, background = trainer.label_reader_input(out)
    if view == "visible":  # each map under the next sample's mask
        torch.testing.assert_close(foreground[3], out.mask[2] * out.foreground[3])
        torch.testing.assert_close(background[0], (1 - out.mask[9]) * out.background[0])
    fg_logits, bg_logits = trainer.label_reader(foreground, background)
    assert fg_logits.shape == bg_logits.shape == (10, 10)
    (F.cross_entropy(fg_logits, labels) + F.cross_entropy(bg_logits, labels)).backward()
    reached = {
        name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(trainer.generator, name).parameters())
        for name in ("shape", "texture", "background")
    }
    assert reached == {"shape": False, "texture": True, "background": True}  # the maps, not the mask

    before = [p.detach().clone() for p in trainer.label_reader.parameters()]
    parts = trainer.train_step()
    assert parts["label_info"].item() == pytest.approx(2 * math.log(10), rel=0.05)  # two untrained readers
    assert all(not torch.equal(a, p) for a, p in zip(before, trainer.label_reader.parameters(), strict=True))
    assert "opt_q" in trainer.optimizers


def test_before_label_info_start_the_term_trains_the_reader_alone(tmp_path, data_root, debug_config):
    def one_step(name, *overrides):
        trainer = Trainer(
            debug_config.override("loss.label_info_weight=1", *overrides), tmp_path / name, data_root=data_root
        )
        reader_before = [p.detach().clone() for p in trainer.label_reader.parameters()]
        trainer.train_step()
        return trainer, reader_before

    waiting, reader_before = one_step("waiting", "loss.label_info_start=0.5")
    reading, _ = one_step("reading")
    assert not waiting.label_info_on and reading.label_info_on
    # The same first step: the reader's update is the same; the generator's differs by the term.
    pairs = zip(waiting.label_reader.parameters(), reading.label_reader.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert all(not torch.equal(a, b) for a, b in zip(reader_before, waiting.label_reader.parameters(), strict=True))
    pairs = zip(waiting.generator.parameters(), reading.generator.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("route", ["image", "mask"])
def test_the_shape_critic_reaches_the_mechanisms_its_route_names(tmp_path, data_root, debug_config, route):
    config = debug_config.override("loss.shape_view_weight=1", f"loss.shape_view_gradient={route}")
    trainer = Trainer(config, tmp_path / "run", data_root=data_root)
    labels = torch.arange(4)
    out = trainer.generator(labels, noise=trainer.generator.sample_noise(4, trainer.rng))
    critic_input = trainer.shape_critic_input(out)
    assert torch.equal(critic_input, out.image)  # the same composite either way
    trainer.shape_discriminator(trainer.shape_view(critic_input), labels).sum().backward()
    reached = {
        name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(trainer.generator, name).parameters())
        for name in ("shape", "texture", "background")
    }
    assert reached == {"shape": True, "texture": route == "image", "background": route == "image"}


def test_the_discriminator_clip_is_exact_under_its_limit_and_cuts_a_spike(tmp_path, data_root, debug_config):
    def states(overrides, name):
        trainer = Trainer(debug_config.override(*overrides), tmp_path / name, data_root=data_root)
        torch.manual_seed(0)  # dropout (fit() seeds it)
        steps = [trainer.train_step() for _ in range(3)]
        return steps, {**trainer.generator.state_dict(), **trainer.discriminator.state_dict()}

    _, plain = states([], "plain")
    steps, under = states(["train.d_grad_clip=1e9"], "under")  # never reached: bit for bit the same
    assert all(torch.equal(plain[k], under[k]) for k in plain)
    assert all(s["d_clipped"] == 0 and 0 < s["d_grad_norm"] < 1e9 for s in steps)
    steps, cut = states(["train.d_grad_clip=1e-6"], "cut")  # always reached: every update is cut
    assert all(s["d_clipped"] == 1 for s in steps) and not all(torch.equal(plain[k], cut[k]) for k in plain)
    with pytest.raises(ConfigError, match="d_grad_clip must be non-negative"):
        debug_config.override("train.d_grad_clip=-1")
    # The log keeps each window's mean and largest norm, where a spike shows, for the shape
    # critic too.
    config = debug_config.override("train.d_grad_clip=1e9", "loss.shape_view_weight=0.5")
    train_cgn(config, tmp_path / "run", data_root=data_root, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for critic in ("d", "s"):
        assert all(r[f"{critic}_grad_norm_max"] >= r[f"{critic}_grad_norm"] > 0 for r in lines)
        assert all(r[f"{critic}_clipped"] == 0 for r in lines)


def test_existing_run_needs_resume(tmp_path, data_root, debug_config):
    train_cgn(debug_config, tmp_path / "run", data_root=data_root, progress=False, stop_at=4)
    with pytest.raises(ConfigError, match="pass --resume"):
        train_cgn(debug_config, tmp_path / "run", data_root=data_root, progress=False)


def test_resume_with_another_config_is_refused(tmp_path, data_root, debug_config):
    train_cgn(debug_config, tmp_path / "run", data_root=data_root, progress=False, stop_at=4)
    other = load_config(REPO / "configs" / "debug.toml", ["train.steps=8", "train.lr=1e-3"])
    with pytest.raises(ConfigError, match="another config"):
        train_cgn(other, tmp_path / "run", data_root=data_root, progress=False, resume=True)


def test_a_crash_during_a_save_keeps_the_last_good_checkpoint(tmp_path, data_root, debug_config, monkeypatch):
    trainer = Trainer(debug_config, tmp_path / "run", data_root=data_root)
    trainer.fit(stop_at=4, progress=False)
    trainer.train_step()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed during the save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step_0000004"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_0000004"]
    monkeypatch.undo()
    resumed = Trainer(debug_config, tmp_path / "run", data_root=data_root)
    resumed.fit(resume=True, progress=False, stop_at=4)
    assert resumed.step == 4


def test_checkpoint_round_trip_and_corruption(tmp_path, debug_config):
    model = CGN(debug_config.model)
    path = save_weights(tmp_path / "m.safetensors", model, config=debug_config, kind="cgn", step=3)
    loaded, config, metadata = load_cgn(path)
    assert config == debug_config and metadata["kind"] == "cgn"
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_cgn(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_cgn(tmp_path / "nope.safetensors")


def test_training_speed_times_real_steps_of_each_config_and_writes_nothing(
    tmp_path, data_root, debug_config, monkeypatch
):
    calls = []

    def fake_median_seconds(runs, repeats):
        for run in runs.values():
            run()  # the real steps, once
        calls.append((list(runs), repeats))
        return {"small": 2.0, "large": 4.0}

    monkeypatch.setattr("cgn.trainer.median_seconds", fake_median_seconds)
    configs = {"small": debug_config, "large": debug_config.override("train.batch_size=8")}
    speed = training_speed(configs, tmp_path / "runs", steps=3, blocks=5, data_root=data_root)
    assert calls == [(["small", "large"], 5)]
    assert speed == {"small": 3 * debug_config.train.batch_size / 2.0, "large": 3 * 8 / 4.0}
    assert not (tmp_path / "runs").exists() or not any(p.is_file() for p in (tmp_path / "runs").rglob("*"))


def test_speed_row_reports_the_config_as_it_runs_and_the_speed_up():
    path = str(REPO / "configs" / "debug.toml")
    row = speed_row("debug", path, ["train.batch_size=8"], {"old": 100.0, "new": 125.0}, baseline="old", variant="new")
    assert row["command_config"] == f"{path} train.batch_size=8" and row["batch_size"] == 8
    assert row["precision"] in ("fp32", "bf16")  # "auto" resolved for this machine
    assert row["ms_per_step"] == {"old": 80.0, "new": 64.0} and row["speedup"] == 1.25

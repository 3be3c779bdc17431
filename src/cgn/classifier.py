"""Digit classifiers trained on real, counterfactual or mixed data (PAPER.md §1.4), and IRM.

The paper's CNN and schedule by default: Adadelta (lr 1.0), StepLR (every epoch, γ 0.7),
10 epochs, batch 64, NLL loss on log-softmax outputs.

Training data is a *source*: anything with ``len``, ``set_epoch(epoch)`` and a vectorised
``batch(index)`` returning ``image`` and ``label`` (the biased datasets and
:class:`cgn.counterfactuals.CounterfactualDataset` both are). :class:`MixedSource`
concatenates sources; each epoch shuffles the union, so a batch draws real and
counterfactual images in proportion to their counts (60k real + 100k counterfactual gives
about 24 real and 40 counterfactual images per batch of 64), as the original's
``ConcatDataset`` did.

IRM (``objective = "irm"``) is IRMv1 (Arjovsky et al. 2019): the ERM loss plus the squared
gradient of each environment's risk with respect to a dummy output scale. The training data of
the biased datasets is perfectly correlated: every split of it has the same colour–label
relation, so there are no natural environments. :func:`colour_typicality_environments` builds
the only variation the data has: per class, samples whose mean colour is closest to the class's
mean colour form environment 0, the rest environment 1 (halves at the class-wise median), so
the two environments differ in how strongly the colour cue holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cgn.errors import ConfigError
from cgn.precision import check_precision, resolve_precision
from cgn.seeding import derive_seed, make_generator


class MNISTClassifier(nn.Module):
    """The paper's CNN for 3×32×32 digits (PAPER.md §1.4); returns log-probabilities.

    ``standardize`` (ours; off = the paper) first standardises each image: minus its mean per
    channel, divided by its standard deviation over all channels and pixels (floored at
    ``STANDARDIZE_EPS``). That makes the classifier blind to an image's overall contrast, so a
    digit that differs from its background by 1 % reads like one that differs by 100 %
    (docs/table2.md, "Classifier input standardisation").
    """

    STANDARDIZE_EPS = 1e-4

    def __init__(self, num_classes: int = 10, standardize: bool = False) -> None:
        super().__init__()
        self.standardize = standardize
        self.features = nn.Sequential(
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 32, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),  # 32 → 16
            nn.Conv2d(32, 32, 3),  # → 14
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2),  # → 6
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3),  # → 4
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(64, num_classes)

    @classmethod
    def standardized(cls, x: torch.Tensor) -> torch.Tensor:
        """Each image minus its per-channel mean, over its standard deviation (fp32, also under
        autocast: the contrasts it recovers are below bf16's resolution)."""
        x = x.float()
        centred = x - x.mean((2, 3), keepdim=True)
        return centred / centred.flatten(1).std(1).clamp_min(cls.STANDARDIZE_EPS)[:, None, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()  # the 3-channel BatchNorm is 8x slower on channels-last input on the CPU
        if self.standardize:
            x = self.standardized(x)
        x = self.features[0](x).contiguous(memory_format=torch.channels_last)  # the convolutions prefer it
        return F.log_softmax(self.head(self.features[1:](x).flatten(1)), dim=1)


@dataclass(frozen=True)
class ClassifierConfig:
    """The classifier schedule; defaults are the paper's."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1.0
    lr_gamma: float = 0.7  # StepLR, one step per epoch
    objective: str = "erm"  # "erm" or "irm"
    irm_penalty_weight: float = 1e4
    irm_anneal_epochs: int = 1  # penalty weight 1 before this epoch, as IRMv1's annealing
    precision: str = "fp32"  # "fp32", "bf16" autocast or "auto" (bf16 where native: cgn.precision)
    standardize: bool = False  # ours: per-image standardisation before the CNN (MNISTClassifier)
    seed: int = 0
    eval_batch_size: int = 1000

    def validate(self) -> ClassifierConfig:
        if self.epochs <= 0 or self.batch_size <= 0:
            raise ConfigError("classifier epochs and batch size must be positive")
        if not (self.lr > 0 and 0 < self.lr_gamma <= 1 and self.eval_batch_size > 0):
            raise ConfigError("classifier lr and eval batch size must be positive, and lr_gamma must lie in (0, 1]")
        if self.irm_penalty_weight < 0 or self.irm_anneal_epochs < 0:
            raise ConfigError("classifier irm_penalty_weight and irm_anneal_epochs must not be negative")
        if self.objective not in ("erm", "irm"):
            raise ConfigError(f"classifier objective must be 'erm' or 'irm', not {self.objective!r}")
        check_precision(self.precision, "classifier precision")
        return self


class MixedSource:
    """Several sources as one (indices run through them in order)."""

    def __init__(self, sources: Sequence) -> None:
        if not sources:
            raise ConfigError("a mixed source needs at least one source")
        self.sources = list(sources)
        self.offsets = torch.tensor([0, *torch.tensor([len(s) for s in sources]).cumsum(0).tolist()])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        for source in self.sources:
            source.set_epoch(epoch)

    def batch(self, index: torch.Tensor | list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long)
        which = torch.bucketize(index, self.offsets[1:], right=True)  # source of each index
        images = labels = None
        for k, source in enumerate(self.sources):
            picked = (which == k).nonzero().flatten()
            if not len(picked):
                continue
            part = source.batch(index[picked] - self.offsets[k])
            if images is None:
                images = torch.empty((len(index), *part["image"].shape[1:]))
                labels = torch.empty(len(index), dtype=torch.long)
            images[picked], labels[picked] = part["image"], part["label"]
        return {"image": images, "label": labels}


class Subset:
    """The first ``n`` samples of a source."""

    def __init__(self, source, n: int) -> None:
        self.source, self.n = source, min(n, len(source))

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    def batch(self, index):
        return self.source.batch(index)


@torch.no_grad()
def colour_typicality_environments(source, batch_size: int = 5000) -> torch.Tensor:
    """IRM environments for perfectly correlated data: 0 = colour typical of the class, 1 = atypical.

    Per sample the image's mean RGB; per class its mean over the class; the distance between
    the two split at each class's median (see the module docstring).
    """
    source.set_epoch(0)
    means, labels = [], []
    for start in range(0, len(source), batch_size):
        part = source.batch(torch.arange(start, min(start + batch_size, len(source))))
        means.append(part["image"].mean(dim=(2, 3)))
        labels.append(part["label"])
    mean, label = torch.cat(means), torch.cat(labels)
    environment = torch.zeros(len(label), dtype=torch.long)
    for c in label.unique():
        members = (label == c).nonzero().flatten()
        distance = (mean[members] - mean[members].mean(0)).norm(dim=1)
        environment[members] = (distance > distance.median()).long()
    return environment


def irm_penalty(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IRMv1: squared gradient of the risk w.r.t. a dummy scale on the outputs, at scale 1."""
    scale = torch.ones((), device=log_probs.device, requires_grad=True)
    loss = F.nll_loss(F.log_softmax(log_probs * scale, dim=1), labels)
    (grad,) = torch.autograd.grad(loss, [scale], create_graph=True)
    return grad.pow(2)


@torch.no_grad()
def accuracy(model: nn.Module, source, batch_size: int = 1000, precision: str = "fp32") -> float:
    """Top-1 accuracy in percent of ``model`` (eval mode) on ``source``."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(source), batch_size):
        part = source.batch(torch.arange(start, min(start + batch_size, len(source))))
        with _autocast(precision, device):
            prediction = model(part["image"].to(device)).argmax(1)
        correct += int((prediction.cpu() == part["label"]).sum())
    return 100.0 * correct / len(source)


def _autocast(precision: str, device: torch.device):
    """bf16 autocast for "bf16", and for "auto" where the device has native bf16."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")


@dataclass
class ClassifierResult:
    train_acc: float
    eval_acc: dict[str, float]
    seconds: float
    images_per_s: float
    config: dict

    def to_dict(self) -> dict:
        return asdict(self)


def train_classifier(
    source,
    eval_sets: Mapping[str, object],
    config: ClassifierConfig | None = None,
    *,
    environments: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    description: str = "classifier",
) -> tuple[MNISTClassifier, ClassifierResult]:
    """Train the paper's CNN on ``source``; report train accuracy and accuracy on ``eval_sets``.

    ``environments`` (one index per training sample) is required for ``objective = "irm"``.
    Seeded: initial weights and the per-epoch order come from ``config.seed``.
    """
    config = (config or ClassifierConfig()).validate()
    device = torch.device(device)
    if config.objective == "irm" and (environments is None or len(environments) != len(source)):
        raise ConfigError("IRM needs one environment index per training sample")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "classifier_init"))
        model = MNISTClassifier(standardize=config.standardize)
        model = model.to(device, memory_format=torch.channels_last)  # faster convs on the CPU
    optimizer = torch.optim.Adadelta(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=config.lr_gamma)
    steps_per_epoch = math.ceil(len(source) / config.batch_size)
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=description, unit="step", disable=not progress)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        source.set_epoch(epoch)
        order = torch.randperm(len(source), generator=make_generator(config.seed, "classifier_order", epoch))
        penalty_weight = config.irm_penalty_weight if epoch >= config.irm_anneal_epochs else 1.0
        # Running sums stay on the device: reading them every step would sync a GPU each step.
        running_loss = torch.zeros((), device=device)
        running_correct = torch.zeros((), dtype=torch.long, device=device)
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            part = source.batch(index)
            x = part["image"].to(device)
            y = part["label"].to(device)
            with _autocast(config.precision, device):
                log_probs = model(x).float()
            loss = F.nll_loss(log_probs, y)
            if config.objective == "irm":
                env = environments[index].to(device)
                penalty = sum(irm_penalty(log_probs[env == e], y[env == e]) for e in env.unique())
                loss = loss + penalty_weight * penalty
                if penalty_weight > 1:
                    loss = loss / penalty_weight  # keeps gradients on the ERM scale (IRMv1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running_loss += loss.detach()
            running_correct += (log_probs.detach().argmax(1) == y).sum()
            bar.update(1)
            if progress and step % 50 == 0:
                seen = min((step + 1) * config.batch_size, len(source))
                bar.set_postfix(
                    epoch=epoch + 1,
                    loss=f"{float(running_loss) / (step + 1):.3f}",
                    acc=f"{100 * int(running_correct) / seen:.1f}",
                )
        scheduler.step()
    bar.close()
    seconds = time.perf_counter() - start
    train_acc = accuracy(model, source, config.eval_batch_size, config.precision)
    eval_acc = {
        name: accuracy(model, data, config.eval_batch_size, config.precision) for name, data in eval_sets.items()
    }
    result = ClassifierResult(
        train_acc=train_acc,
        eval_acc=eval_acc,
        seconds=round(seconds, 2),
        images_per_s=round(config.epochs * len(source) / seconds, 1),
        config=asdict(config),
    )
    return model, result

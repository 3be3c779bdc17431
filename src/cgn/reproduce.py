"""``cgn reproduce table2``: the paper's MNIST table (PAPER.md §1.5) in one resumable command.

For each seed (outer loop, so a complete one-seed table exists early) and dataset it trains
the CGN (our fast recipe, ``configs/fast``) and the conditional-GAN baseline, generates their
counterfactual datasets and one from the authors' released CGN, then trains the paper's
classifier for each method and evaluates it on the de-correlated ``test`` and ``test_official``
splits. Every unit keeps its artefacts (checkpoints, counterfactual shards) in
``runs/<name>/<dataset>/seed<k>/`` and its small record (a row's accuracies, a unit's seconds,
a generator's recipe) in the records folder: the run folder itself by default, or a folder of
its own (``--records``, e.g. under version control beside the table), so that a lost run folder
costs only the units still needed. A rerun skips finished units and resumes interrupted CGN
trainings, so the table survives interruptions.

Methods (the rows):
- ``original``: the real biased train split;
- ``original_gan``: real + the cGAN's samples (same count as the counterfactuals);
- ``irm``: IRMv1 on the real split, environments by colour typicality (cgn.classifier);
- ``cgn``: counterfactuals only; ``original_cgn``: real + counterfactuals;
- ``authors_cgn``, ``original_authors_cgn``: the same, from the authors' released CGN.

The biased datasets use data seed 0 throughout (fixed benchmark data, frozen test sets); a
table seed seeds the CGN and GAN training, the generation and the classifier.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from cgn.classifier import ClassifierConfig, MixedSource, Subset, colour_typicality_environments, train_classifier
from cgn.config import CGNConfig, load_config
from cgn.counterfactuals import MANIFEST, CounterfactualDataset, GenerationSpec, generate_counterfactuals
from cgn.data import build_dataset
from cgn.data.paths import data_root, mirror_root
from cgn.environment import describe
from cgn.errors import ConfigError
from cgn.files import write_text
from cgn.precision import resolve_precision
from cgn.trainer import pick_device, resolve_run_config
from cgn.viz import image_sheet, save_image

log = logging.getLogger(__name__)

DATASETS = ("colored_mnist", "double_colored_mnist", "wildlife_mnist")
METHODS = ("original", "original_gan", "irm", "cgn", "original_cgn", "authors_cgn", "original_authors_cgn")
# The order units run in: the rows that show the effect first, so a partial table says most.
RUN_ORDER = ("original", "original_cgn", "cgn", "authors_cgn", "original_authors_cgn", "original_gan", "irm")
# The generator whose counterfactuals a row trains on (None: the real data only).
GENERATOR_KIND = {
    "cgn": "cgn",
    "original_cgn": "cgn",
    "authors_cgn": "authors",
    "original_authors_cgn": "authors",
    "original_gan": "gan",
}


def not_in_table(dataset: str, method: str) -> bool:
    """The authors' colored-MNIST CGN learned another palette than ours (README): no such rows."""
    return GENERATOR_KIND.get(method) == "authors" and dataset == "colored_mnist"


def _mask_terms(config: CGNConfig) -> dict[str, float | int]:
    """The config's loss terms on the mask (and their knobs), which only a CGN computes."""
    loss = config.loss
    return {
        name: getattr(loss, name)
        for name in (
            "mask_weight",
            "mask_size_weight",
            "mask_size_min",
            "mask_size_max",
            "mask_border_weight",
            "mask_border_width",
            "mode_seeking_weight",
        )
    }


@dataclass(frozen=True)
class Unit:
    """One resumable piece of a table: a generator's training (name ``cgn`` / ``gan``), a
    counterfactual set (``counterfactuals_<kind>``) or a row's classifier (the method).

    ``marker`` records the seconds it took. A row's classifier is done when its marker exists; a
    generator or counterfactual set when its marker and its ``artefact`` do, or when every row
    that needs it (the classifier markers ``needed_by``) is done."""

    dataset: str
    seed: int
    name: str
    marker: Path
    artefact: Path | None = None
    needed_by: tuple[Path, ...] = ()

    @property
    def kind(self) -> str:
        """What the unit's time is estimated from: the CGN's training and the CGN-only row share
        the name ``cgn`` but not their cost."""
        return self.name if self.artefact is not None else f"row {self.name}"

    def done(self) -> bool:
        if self.artefact is None:
            return self.marker.exists()
        made = self.marker.exists() and self.artefact.exists()
        return made or (bool(self.needed_by) and all(p.exists() for p in self.needed_by))


@dataclass(frozen=True)
class Job:
    """What one worker process runs at a time: one generator group's rows (``methods``) on one
    dataset and seed. Jobs share no unit, so any number can run at once on one run folder."""

    dataset: str
    seed: int
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.dataset}_seed{self.seed}_{self.methods[0]}"


@dataclass(frozen=True)
class TableStatus:
    done: int
    total: int
    seconds_left: float  # the estimate for the timed units left of the worker with the most left
    untimed: int  # units left of a kind that has not finished once yet (not in the estimate)

    def line(self) -> str:
        if self.done == self.total:
            return f"table: all {self.total} units done"
        estimate = f"about {self.seconds_left / 3600:.1f} h left"
        if self.untimed:
            estimate += f" plus {self.untimed} unit(s) of a kind not yet timed"
        return f"table: {self.done}/{self.total} units done, {estimate}"


# Rows that share a generator (ours, the authors', the GAN's, none): a job takes a whole group
# on one dataset and seed, so that no two processes train or generate the same unit.
GENERATOR_GROUPS = (
    ("cgn", "original_cgn"),
    ("authors_cgn", "original_authors_cgn"),
    ("original", "irm"),
    ("original_gan",),
)
DATA_SEED = 0
ORIGINAL_FILES = {
    "colored_mnist": "cgn_colored_MNIST.pth",
    "double_colored_mnist": "cgn_double_colored_MNIST.pth",
    "wildlife_mnist": "cgn_wildlife_MNIST.pth",
}
# PAPER.md §1.5: (train, de-correlated test) accuracy in percent.
PAPER = {
    "original": {"colored_mnist": (99.5, 35.9), "double_colored_mnist": (100, 10.3), "wildlife_mnist": (100, 10.1)},
    "irm": {"colored_mnist": (99.6, 59.8), "double_colored_mnist": (100, 67.7), "wildlife_mnist": (100, 11.3)},
    "original_gan": {"colored_mnist": (99.8, 40.7), "double_colored_mnist": (100, 10.8), "wildlife_mnist": (100, 10.4)},
    "original_cgn": {
        "colored_mnist": (99.7, 95.1),
        "double_colored_mnist": (97.4, 89.0),
        "wildlife_mnist": (99.2, 85.7),
    },
}
METHOD_NAMES = {
    "original": "Original",
    "original_gan": "Original + GAN",
    "irm": "IRM",
    "cgn": "CGN only",
    "original_cgn": "Original + CGN",
    "authors_cgn": "authors' CGN only",
    "original_authors_cgn": "Original + authors' CGN",
}


@dataclass(frozen=True)
class Schedule:
    """How much of everything one table costs."""

    cgn_config_dir: str = "configs/fast"
    cgn_overrides: tuple[str, ...] = ()  # applied to the CGN and the GAN configs
    num_counterfactuals: int = 100_000
    per_mask: int = 10
    generation_precision: str = "fp32"
    shape_noise_scale: float = 1.0  # GenerationSpec.shape_noise_scale, for every generator
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    counterfactual_epochs: int | None = None  # classifier epochs on counterfactual-only data
    real_limit: int | None = None  # use the first N real training images only
    test_limit: int | None = None  # evaluate on the first N images of each test split (smoke runs)
    methods: tuple[str, ...] = METHODS


# The paper's classifier schedule in bf16 autocast where the machine has native bf16 (1.8× faster
# on an AVX-512 CPU; "auto" is fp32 elsewhere) with per-image input standardisation (ours: it
# reads the digits drawn in their background's colour; docs/table2.md, "Classifier input
# standardisation"). The library's default ClassifierConfig stays the paper's.
FULL = Schedule(classifier=ClassifierConfig(precision="auto", standardize=True))
QUICK = Schedule(
    cgn_overrides=("train.steps=1600", "train.sample_every=800", "train.checkpoint_every=400"),
    num_counterfactuals=20_000,
    generation_precision="auto",
    classifier=ClassifierConfig(epochs=2, precision="auto"),
    real_limit=10_000,
    methods=("original", "cgn", "original_cgn", "authors_cgn"),
)


def original_checkpoint(dataset: str, root: Path | None = None) -> Path | None:
    """The authors' released CGN for ``dataset``: in ``<data root>/original_mnist_checkpoints``
    or ``$CGN_DATA_MIRROR/original_mnist_checkpoints``; None when neither has it."""
    for base in (data_root(root), mirror_root()):
        if base is not None and (base / "original_mnist_checkpoints" / ORIGINAL_FILES[dataset]).is_file():
            return base / "original_mnist_checkpoints" / ORIGINAL_FILES[dataset]
    return None


def resolve_schedule(schedule: Schedule, device: torch.device) -> Schedule:
    """The schedule as it runs on ``device``: its "auto" precisions become "bf16" or "fp32", so
    that schedule.json states what was computed (and a table is not finished on another kind
    of machine unnoticed)."""
    classifier = replace(schedule.classifier, precision=resolve_precision(schedule.classifier.precision, device))
    return replace(
        schedule,
        generation_precision=resolve_precision(schedule.generation_precision, device),
        classifier=classifier,
    )


class Reproduction:
    """One table: its run folder, schedule, and the units it runs or reuses."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        schedule: Schedule,
        *,
        datasets: Sequence[str] = DATASETS,
        seeds: Sequence[int] = (0, 1, 2),
        data_dir: str | os.PathLike | None = None,
        sheets_dir: str | os.PathLike | None = None,
        progress: bool = True,
        device: str = "auto",
        records_dir: str | os.PathLike | None = None,
    ) -> None:
        unknown = [d for d in datasets if d not in DATASETS]
        if unknown:
            raise ConfigError(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
        bad = [m for m in schedule.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        self.run_dir = Path(run_dir)
        self.records_dir = Path(records_dir) if records_dir is not None else self.run_dir
        self.device = device  # "auto", "cpu" or "cuda": generation, classifiers, and CGN training
        self.torch_device = pick_device(device)  # resolved once: a missing GPU fails here, not mid-table
        self.schedule = resolve_schedule(schedule, self.torch_device)
        self.datasets, self.seeds = list(datasets), [int(s) for s in seeds]
        self.data_dir = data_dir
        self.sheets_dir = Path(sheets_dir) if sheets_dir is not None else None
        self.progress = progress
        self._tests: dict[str, dict] = {}
        self._check_schedule()

    def _check_schedule(self) -> None:
        """A run folder (and a records folder) belongs to one schedule: mixing two in one table
        would go unnoticed."""
        schedule = json.loads(json.dumps(asdict(self.schedule)))
        for folder, option in ((self.run_dir, "--run-dir"), (self.records_dir, "--records")):
            path = folder / "schedule.json"
            if path.exists() and json.loads(path.read_text()) != schedule:
                raise ConfigError(
                    f"{folder} was started with another schedule (see {path}): "
                    f"use another {option}, or the options it was started with"
                )
        for folder in {self.run_dir, self.records_dir}:
            folder.mkdir(parents=True, exist_ok=True)
            write_text(folder / "schedule.json", json.dumps(schedule, indent=2) + "\n")

    # -- units ----------------------------------------------------------------------------------
    def _timed(self, marker: Path, artefact: Path, work, **record) -> None:
        """Run ``work`` unless ``marker`` records it as done and its ``artefact`` is still there
        (remade when the run folder was lost); the marker keeps the seconds and ``record``."""
        if marker.exists() and artefact.exists():
            return
        start = time.perf_counter()
        work()
        write_text(marker, json.dumps({"seconds": round(time.perf_counter() - start, 2), **record}) + "\n")

    def _record(self, dataset: str, seed: int, *parts: str) -> Path:
        return self.records_dir / dataset / f"seed{seed}" / Path(*parts)

    def _artefact(self, dataset: str, seed: int, name: str) -> Path:
        """What generator unit ``name`` leaves in the run folder: a checkpoint (``cgn``, ``gan``)
        or a counterfactual set's manifest (``counterfactuals_<kind>``, written last)."""
        folder = self.run_dir / dataset / f"seed{seed}" / name
        return folder / MANIFEST if name.startswith("counterfactuals_") else folder / "cgn.safetensors"

    def generator_config(self, dataset: str, seed: int, kind: str) -> CGNConfig:
        path = Path(self.schedule.cgn_config_dir) / f"{dataset}.toml"
        checkout = Path(__file__).resolve().parents[2]  # the repository, for an editable install
        if not path.is_file() and not path.is_absolute() and (checkout / path).is_file():
            path = checkout / path
        if not path.is_file():
            raise ConfigError(f"CGN config {path} not found; run from the repository root (it holds configs/fast/)")
        overrides = [*self.schedule.cgn_overrides, f"train.seed={seed}", f"train.dataset={dataset}"]
        if self.device != "auto":  # config.json records it; "auto" keeps the recipe's own default
            overrides.append(f"train.device={self.device}")
        if kind == "gan":  # the same recipe without the mechanism split (no background init, one rate)
            overrides += ["model.generator=cgan", "train.frame_init=false", "train.mechanism_lr_scale=[1.0, 1.0, 1.0]"]
        return resolve_run_config(load_config(path, overrides))  # its records state the precision it ran in

    def train_generator(self, dataset: str, seed: int, kind: str) -> Path:
        from cgn.trainer import train_cgn

        folder = self.run_dir / dataset / f"seed{seed}" / kind
        config = self.generator_config(dataset, seed, kind)
        self.check_recipe(dataset, kind, config)
        checkpoint = self._artefact(dataset, seed, kind)
        self._timed(
            self._record(dataset, seed, kind, "unit.json"),
            checkpoint,
            lambda: train_cgn(config, folder, resume=True, data_root=self.data_dir, progress=self.progress),
            config=config.to_dict(),
        )
        return checkpoint

    def check_recipe(self, dataset: str, kind: str, config: CGNConfig) -> None:
        """Every seed's training of this generator, finished (its record) or under way (its run
        folder), used ``config`` but for the seed: one table, one recipe (a config edited between
        two seeds would otherwise go unnoticed)."""
        saved = [(p.parent, json.loads(p.read_text())["config"]) for p in self._generator_markers(dataset, kind)]
        saved += [
            (p.parent, json.loads(p.read_text())) for p in (self.run_dir / dataset).glob(f"seed*/{kind}/config.json")
        ]
        for where, other in sorted(saved, key=lambda pair: str(pair[0])):
            if kind == "gan":  # a cGAN has no mask: terms on it leave its training unchanged
                other = {**other, "loss": {**other.get("loss", {}), **_mask_terms(config)}}
            if not config.override(f"train.seed={other['train']['seed']}").matches(other):
                raise ConfigError(
                    f"{where} was trained with another {kind.upper()} recipe than "
                    f"{self.schedule.cgn_config_dir} gives now: finish the table in a new --run-dir "
                    "(or restore the recipe it was started with, or delete this generator's units for every "
                    "seed: docs/table2.md, 'The full table')"
                )

    def _generator_markers(self, dataset: str, kind: str) -> list[Path]:
        """The records of finished trainings that carry their recipe (older ones do not)."""
        markers = sorted((self.records_dir / dataset).glob(f"seed*/{kind}/unit.json"))
        return [p for p in markers if "config" in json.loads(p.read_text())]

    def authors_generator(self, dataset: str) -> Path | None:
        from cgn.original import save_imported

        source = original_checkpoint(dataset, self.data_dir)
        if source is None:
            return None
        out = self.run_dir / dataset / "authors_cgn.safetensors"
        if not out.exists():
            save_imported(source, dataset, out)
        return out

    def counterfactuals(self, dataset: str, seed: int, kind: str) -> CounterfactualDataset | None:
        if kind == "authors":
            checkpoint = self.authors_generator(dataset)
            if checkpoint is None:
                return None
        else:
            checkpoint = self.train_generator(dataset, seed, kind)
        folder = self.run_dir / dataset / f"seed{seed}" / f"counterfactuals_{kind}"
        s = self.schedule
        spec = GenerationSpec(
            num=s.num_counterfactuals,
            per_mask=s.per_mask,
            seed=seed,
            precision=s.generation_precision,
            shape_noise_scale=s.shape_noise_scale,
        )
        self._timed(
            self._record(dataset, seed, f"counterfactuals_{kind}", "unit.json"),
            self._artefact(dataset, seed, f"counterfactuals_{kind}"),
            lambda: generate_counterfactuals(
                checkpoint, folder, spec, device=self.torch_device, progress=self.progress
            ),
        )
        return CounterfactualDataset(folder)

    def write_sheets(self, dataset: str) -> None:
        """A sheet of each finished counterfactual set of the first seed, rewritten on every run
        so that the sheets beside a table always show that table's own data."""
        if self.sheets_dir is None:
            return
        for kind in ("cgn", "gan", "authors"):
            folder = self.run_dir / dataset / f"seed{self.seeds[0]}" / f"counterfactuals_{kind}"
            if (folder / MANIFEST).exists():
                sheet = self.sheets_dir / f"{dataset}_{kind}_counterfactuals.png"
                save_image(counterfactual_sheet(CounterfactualDataset(folder)), sheet)

    def test_splits(self, dataset: str) -> dict:
        """The frozen de-correlated test splits, built once per dataset."""
        if dataset not in self._tests:
            splits = ("test", "test_official")
            tests = {s: build_dataset(dataset, s, DATA_SEED, self.data_dir) for s in splits}
            if self.schedule.test_limit:
                tests = {s: Subset(data, self.schedule.test_limit) for s, data in tests.items()}
            self._tests = {dataset: tests}
        return self._tests[dataset]

    def real(self, dataset: str):
        source = build_dataset(dataset, "train", DATA_SEED, self.data_dir)
        return Subset(source, self.schedule.real_limit) if self.schedule.real_limit else source

    def classifier_record(self, dataset: str, seed: int, method: str) -> Path:
        return self._record(dataset, seed, "classifiers", f"{method}.json")

    def classify(self, dataset: str, seed: int, method: str) -> dict | None:
        """Train and evaluate one row's classifier; its JSON is the unit's marker."""
        path = self.classifier_record(dataset, seed, method)
        if path.exists():
            return json.loads(path.read_text())
        s = self.schedule
        config = replace(s.classifier, seed=seed)
        environments = None
        kind = GENERATOR_KIND.get(method)
        counterfactual = self.counterfactuals(dataset, seed, kind) if kind else None
        if kind and counterfactual is None:
            log.warning(
                "skipping %s on %s: the authors' checkpoint %s is not available",
                method,
                dataset,
                ORIGINAL_FILES[dataset],
            )
            return None
        if method in ("original", "irm"):
            source = self.real(dataset)
        elif method in ("cgn", "authors_cgn"):
            source = counterfactual
            config = replace(config, epochs=s.counterfactual_epochs or config.epochs)
        else:
            source = MixedSource([self.real(dataset), counterfactual])
        if method == "irm":
            config = replace(config, objective="irm")
            environments = colour_typicality_environments(source)
        eval_sets = {
            split: build_dataset(dataset, split, DATA_SEED, self.data_dir) for split in ("test", "test_official")
        }
        _, result = train_classifier(
            source,
            eval_sets,
            config,
            environments=environments,
            device=self.torch_device,
            progress=self.progress,
            description=f"{method} {dataset} seed{seed}",
        )
        record = {
            "method": method,
            "dataset": dataset,
            "seed": seed,
            "train_acc": result.train_acc,
            "test_acc": result.eval_acc["test"],
            "test_official_acc": result.eval_acc["test_official"],
            "train_size": len(source),
            "seconds": result.seconds,
            "images_per_s": result.images_per_s,
            "device": str(self.torch_device),
            "classifier": result.config,
        }
        write_text(path, json.dumps(record, indent=2) + "\n")
        return record

    # -- progress -------------------------------------------------------------------------------
    def units(
        self,
        methods: Sequence[str] | None = None,
        datasets: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Unit]:
        """Every unit the rows ``methods`` (default: the schedule's) need on ``datasets`` and
        ``seeds`` (default: the table's), in run order."""
        selected = sorted(self.selected(methods), key=RUN_ORDER.index)
        units: dict[Path, Unit] = {}  # keyed by marker: rows share their generator's units
        for seed in self.seeds if seeds is None else seeds:
            for dataset in self.datasets if datasets is None else datasets:
                for method in selected:
                    kind = GENERATOR_KIND.get(method)
                    if not_in_table(dataset, method) or (
                        kind == "authors" and original_checkpoint(dataset, self.data_dir) is None
                    ):
                        continue  # rows run() skips
                    row = self.classifier_record(dataset, seed, method)
                    made = []  # the generator units this row needs
                    if kind in ("cgn", "gan"):  # trained here; the authors' is imported
                        made.append(kind)
                    if kind is not None:
                        made.append(f"counterfactuals_{kind}")
                    for name in made:
                        marker = self._record(dataset, seed, name, "unit.json")
                        artefact = self._artefact(dataset, seed, name)
                        unit = units.get(marker) or Unit(dataset, seed, name, marker, artefact)
                        units[marker] = replace(unit, needed_by=(*unit.needed_by, row))
                    units[row] = Unit(dataset, seed, method, row)
        return list(units.values())

    def selected(self, methods: Sequence[str] | None = None) -> tuple[str, ...]:
        """The rows ``methods`` (default: all the schedule's), checked against the schedule."""
        if methods is None:
            return self.schedule.methods
        outside = [m for m in methods if m not in self.schedule.methods]
        if outside:
            raise ConfigError(
                f"method(s) {outside} are not in this schedule; choose from {', '.join(self.schedule.methods)}"
            )
        return tuple(methods)

    def jobs(self, methods: Sequence[str] | None = None) -> list[Job]:
        """The table cut into jobs for workers, every unit of the rows ``methods`` in exactly
        one, in run order."""
        selected = self.selected(methods)
        jobs = []
        for seed in self.seeds:
            for dataset in self.datasets:
                for group in GENERATOR_GROUPS:
                    rows = tuple(sorted((m for m in group if m in selected), key=RUN_ORDER.index))
                    if rows and self.units(rows, [dataset], [seed]):
                        jobs.append(Job(dataset, seed, rows))
        return jobs

    def pending(self, methods: Sequence[str] | None = None) -> list[tuple[Job, float, int]]:
        """The jobs with units left, each with its estimated seconds left and its number of
        untimed units, costliest first: those with untimed units (perhaps a CGN's training, the
        longest unit there is) before the rest, so that workers finish together.

        Each unit left is costed at the mean wall time of the finished units of its kind on its
        dataset (else on any dataset)."""
        seconds: dict[tuple[str, str], list[float]] = {}
        for u in self.units(methods):
            if not u.marker.exists():  # a unit can be done without its own marker
                continue
            took = json.loads(u.marker.read_text()).get("seconds")
            if took is None:  # restored without its time
                continue
            seconds.setdefault((u.kind, u.dataset), []).append(took)
            seconds.setdefault((u.kind, "*"), []).append(took)
        pending = []
        for job in self.jobs(methods):
            left = [u for u in self.units(job.methods, [job.dataset], [job.seed]) if not u.done()]
            if not left:
                continue
            known = [seconds.get((u.kind, u.dataset)) or seconds.get((u.kind, "*")) for u in left]
            total = sum(statistics.fmean(k) for k in known if k)
            pending.append((job, total, sum(not k for k in known)))
        return sorted(pending, key=lambda p: (p[2] > 0, p[1]), reverse=True)

    def status(self, methods: Sequence[str] | None = None, workers: int = 1) -> TableStatus:
        """Units done and an estimate of the time left: with several workers, each taking the
        next of the ``pending`` jobs as it frees up, the time until the last one finishes."""
        units = self.units(methods)
        pending = self.pending(methods)
        return TableStatus(
            sum(u.done() for u in units),
            len(units),
            makespan([seconds for _, seconds, _ in pending], workers),
            sum(untimed for *_, untimed in pending),
        )

    # -- the table ------------------------------------------------------------------------------
    def run(self, out: str | os.PathLike, *, command: str, quick: bool, methods: Sequence[str] | None = None) -> dict:
        """Run (or resume) every unit, rewriting the table after each classifier.

        ``methods`` runs only those rows this time (the table still reports every finished row),
        so that several processes can share one run folder, e.g. one per row on a GPU.
        """
        selected = self.selected(methods)
        start = time.perf_counter()
        table = self.write(out, command=command, quick=quick, session_seconds=0.0)
        for seed in self.seeds:
            for dataset in self.datasets:
                for method in sorted(selected, key=RUN_ORDER.index):
                    if not_in_table(dataset, method):
                        continue
                    if self.progress and not self.classifier_record(dataset, seed, method).exists():
                        print(self.status(selected).line(), flush=True)  # the whole table's progress
                    self.classify(dataset, seed, method)
                    table = self.write(out, command=command, quick=quick, session_seconds=time.perf_counter() - start)
                if seed == self.seeds[0]:
                    self.write_sheets(dataset)
        return table

    def collect(self) -> tuple[dict, float]:
        """Mean and std over seeds per dataset and method; total seconds of all finished units."""
        datasets: dict[str, dict] = {}
        seconds = 0.0
        for dataset in self.datasets:
            for method in self.schedule.methods:
                records = []
                for seed in self.seeds:
                    path = self.classifier_record(dataset, seed, method)
                    if path.exists():
                        records.append(json.loads(path.read_text()))
                if not records:
                    continue
                entry = {"seeds": [r["seed"] for r in records]}
                for key in ("train_acc", "test_acc", "test_official_acc"):
                    values = [r[key] for r in records]
                    entry[key] = {
                        "mean": round(statistics.fmean(values), 2),
                        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                    }
                datasets.setdefault(dataset, {})[method] = entry
            records_of = self.records_dir / dataset
            for record in [*records_of.glob("seed*/*/unit.json"), *records_of.glob("seed*/classifiers/*.json")]:
                seconds += json.loads(record.read_text()).get("seconds") or 0.0  # None: restored
        restored = self.records_dir / "restored.json"
        if restored.exists():  # the summed time of records restored without their own
            seconds += json.loads(restored.read_text())["seconds"]
        return datasets, seconds

    def write(self, out: str | os.PathLike, *, command: str, quick: bool, session_seconds: float) -> dict:
        datasets, seconds = self.collect()
        env = describe()
        table = {
            "seeds": self.seeds,
            "command": command,
            "quick": quick,
            "wall_time_s": round(seconds, 1),
            "wall_time_note": "sum of the wall times of all finished units (CGN/GAN training, generation, "
            "classifiers), so interrupted and resumed runs count their work once",
            "this_invocation_s": round(session_seconds, 1),
            "machine": env["machine"],
            "versions": env["versions"],
            "allocator": env["allocator"],
            "git_commit": env["git_commit"],
            "git_dirty": env["git_dirty"],
            "schedule": _schedule_dict(self.schedule),
            "datasets": datasets,
        }
        out = Path(out)
        write_text(out, json.dumps(table, indent=2) + "\n")
        write_text(out.with_suffix(".md"), markdown(table))
        return table


def _schedule_dict(schedule: Schedule) -> dict:
    data = asdict(schedule)
    data["cgn_overrides"] = list(schedule.cgn_overrides)
    data["methods"] = list(schedule.methods)
    return data


def _cell(entry: dict | None, seeds: Sequence[int]) -> str:
    """One result; a cell of an unfinished table (fewer seeds than ``seeds``) names its seeds."""
    if entry is None:
        return "–"
    test, official = entry["test_acc"], entry["test_official_acc"]
    spread = f" ± {test['std']:.1f}" if len(entry["seeds"]) > 1 else ""
    text = f"{entry['train_acc']['mean']:.1f} / **{test['mean']:.1f}**{spread} ({official['mean']:.1f})"
    if _partial(entry, seeds):
        text += f" · {'seeds' if len(entry['seeds']) > 1 else 'seed'} {', '.join(map(str, entry['seeds']))}"
    return text


def _partial(entry: dict, seeds: Sequence[int]) -> bool:
    """Whether a result averages fewer seeds than its table's."""
    return list(entry["seeds"]) != list(seeds)


def _unfinished(table: dict) -> bool:
    return any(_partial(e, table["seeds"]) for rows in table["datasets"].values() for e in rows.values())


def markdown(table: dict) -> str:
    """The table with the paper's numbers beside ours."""
    datasets = [d for d in DATASETS if d in table["datasets"]]
    lines = [
        f"# Table 2 (MNIST){' — quick schedule' if table['quick'] else ''}",
        "",
        "Accuracy in %: train / **de-correlated test** ± std over seeds (test_official). "
        f"Seeds {table['seeds']}; {table['wall_time_s'] / 60:.1f} min of compute on {table['machine']}.",
        *(["", "Unfinished: a cell that names its seeds averages only those."] if _unfinished(table) else []),
        "",
        f"Command: `{table['command']}`",
        "",
        "| method | " + " | ".join(f"{d} (ours) | {d} (paper)" for d in datasets) + " |",
        "|---|" + "---|---|" * len(datasets),
    ]
    for method in METHODS:
        if not any(method in table["datasets"][d] for d in datasets):
            continue
        cells = []
        for d in datasets:
            cells.append(_cell(table["datasets"][d].get(method), table["seeds"]))
            paper = PAPER.get(method, {}).get(d)
            cells.append(f"{paper[0]} / {paper[1]}" if paper else "–")
        lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def makespan(seconds: Sequence[float], workers: int) -> float:
    """When the last of ``workers`` finishes, each taking the next of ``seconds`` (in that
    order) as soon as it is free."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}")
    busy = [0.0] * workers
    for took in seconds:
        busy[busy.index(min(busy))] += took
    return max(busy)


def counterfactual_sheet(dataset: CounterfactualDataset, rows: int = 10, columns: int = 10) -> Image.Image:
    """A row per mask (one shape, its ``columns`` counterfactual textures and backgrounds) when
    generated with ``per_mask == columns``; otherwise (a GAN) a row of samples per class."""
    if int(dataset.manifest["per_mask"]) == columns:
        index = [torch.arange(r * columns, (r + 1) * columns) for r in range(rows)]
        titles = [f"shape {int(dataset.labels[r * columns])}" for r in range(rows)]
    else:
        index = [(dataset.labels == c).nonzero().flatten()[:columns] for c in range(rows)]
        titles = [f"class {c}" for c in range(rows)]
    return image_sheet([dataset.batch(i)["image"] for i in index], row_titles=titles)

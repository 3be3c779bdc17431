"""The table-2 reproduction: units, resumability, the JSON schema and the markdown table."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pytest
import torch

from cgn.checkpoint import load_cgn
from cgn.classifier import ClassifierConfig
from cgn.cli import main
from cgn.config import load_config
from cgn.errors import ConfigError
from cgn.files import write_text
from cgn.model import CGN, ConditionalGAN, matched_width, parameter_count
from cgn.reproduce import GENERATOR_GROUPS, METHODS, PAPER, Job, Reproduction, Schedule, makespan, markdown
from cgn.trainer import train_cgn
from tests.conftest import REPO


def test_the_gan_baseline_has_the_cgn_budget_and_trains(tmp_path, data_root):
    config = load_config(REPO / "configs" / "debug.toml", ["model.generator=cgan", "train.steps=2"])
    cgn, gan = parameter_count(CGN(config.model)), parameter_count(ConditionalGAN(config.model))
    assert 1.0 <= gan / cgn < 1.15 and matched_width(config.model) % 4 == 0
    result = train_cgn(config, tmp_path / "gan", data_root=data_root, progress=False)
    model, loaded, _ = load_cgn(result.checkpoint)
    assert isinstance(model, ConditionalGAN) and loaded.model.generator == "cgan"
    assert "mask" not in json.loads((tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()[-1])
    assert model(torch.arange(3), generator=torch.Generator().manual_seed(0)).image.shape == (3, 3, 32, 32)


@pytest.fixture
def tiny_schedule(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(REPO / "configs" / "debug.toml", configs / "double_colored_mnist.toml")
    return Schedule(
        cgn_config_dir=str(configs),
        # frame_init as in configs/fast: the GAN baseline must run without it
        cgn_overrides=("train.steps=4", "train.checkpoint_every=2", "train.sample_every=2", "train.frame_init=true"),
        num_counterfactuals=300,
        per_mask=10,
        classifier=ClassifierConfig(epochs=1, batch_size=32),
        real_limit=200,
        test_limit=500,
        methods=METHODS,
    )


def test_a_tiny_reproduction_runs_every_method_and_resumes(tmp_path, data_root, tiny_schedule):
    out = tmp_path / "results" / "table2.json"
    runs, kept = tmp_path / "runs", tmp_path / "results" / "records"  # artefacts; small records

    def reproduction_of(seeds):
        return Reproduction(
            runs,
            tiny_schedule,
            datasets=["double_colored_mnist"],
            seeds=seeds,
            data_dir=data_root,
            sheets_dir=tmp_path / "results" / "sheets",
            progress=False,
            records_dir=kept,
        )

    reproduction = reproduction_of([0])
    table = reproduction.run(out, command="cgn reproduce table2 (test)", quick=False)
    saved = json.loads(out.read_text())
    assert saved["seeds"] == [0] and saved["quick"] is False and saved["wall_time_s"] > 0
    assert saved["command"] == "cgn reproduce table2 (test)" and saved["machine"] and "git_dirty" in saved
    rows = saved["datasets"]["double_colored_mnist"]
    expected = (
        set(METHODS)
        if (reproduction.authors_generator("double_colored_mnist"))
        else set(METHODS)
        - {
            "authors_cgn",
            "original_authors_cgn",
        }
    )
    assert set(rows) == expected
    for entry in rows.values():
        assert entry["seeds"] == [0]
        for key in ("train_acc", "test_acc", "test_official_acc"):
            assert 0 <= entry[key]["mean"] <= 100 and entry[key]["std"] >= 0
    for kind in ("cgn", "gan"):
        assert (tmp_path / "results" / "sheets" / f"double_colored_mnist_{kind}_counterfactuals.png").exists()
    assert out.with_suffix(".md").read_text() == markdown(table)
    # A rerun recomputes nothing: every unit's record stays as it was; the sheets always show
    # the run's own data (a stale sheet from another run is replaced).
    records = sorted(kept.glob("**/classifiers/*.json"))
    assert len(records) == len(rows) and not list(runs.glob("**/classifiers"))
    assert json.loads((kept / "double_colored_mnist" / "seed0" / "cgn" / "unit.json").read_text())["config"]
    before = {p: p.stat().st_mtime_ns for p in records}
    sheet = tmp_path / "results" / "sheets" / "double_colored_mnist_cgn_counterfactuals.png"
    sheet_bytes = sheet.read_bytes()
    sheet.write_bytes(b"a sheet of another run")
    reproduction_of([0, 1]).run(out, command="again", quick=False)
    assert {p: p.stat().st_mtime_ns for p in records} == before
    assert sheet.read_bytes() == sheet_bytes
    # A lost run folder costs only the units still needed: with every row recorded, nothing...
    shutil.rmtree(runs)
    status = reproduction_of([0, 1]).status()
    assert status.done == status.total and not list(runs.glob("*/"))
    # ...and a row whose record is lost remakes its generator and counterfactuals, identically.
    lost = kept / "double_colored_mnist" / "seed0" / "classifiers" / "cgn.json"
    old = json.loads(lost.read_text())
    lost.unlink()
    assert reproduction_of([0, 1]).status().done == status.total - 3  # the CGN, its data, the row
    reproduction_of([0, 1]).run(out, command="again", quick=False)
    new = json.loads(lost.read_text())
    assert [new[k] for k in ("train_acc", "test_acc", "test_official_acc")] == [
        old[k] for k in ("train_acc", "test_acc", "test_official_acc")
    ]
    assert sorted(p.name for p in (runs / "double_colored_mnist" / "seed0").iterdir()) == ["cgn", "counterfactuals_cgn"]
    # Another schedule, or another CGN recipe, cannot finish this table.
    with pytest.raises(ConfigError, match="another schedule"):
        Reproduction(tmp_path / "elsewhere", replace(tiny_schedule, per_mask=5), records_dir=kept, progress=False)
    config_file = tmp_path / "configs" / "double_colored_mnist.toml"
    recipe = config_file.read_text()
    shutil.rmtree(runs)  # the recipes are checked against the records too
    edited = Reproduction(runs, tiny_schedule, data_dir=data_root, progress=False, records_dir=kept)
    # A new loss term on the mask changes the CGN's recipe, not the cGAN's (it has no mask).
    config_file.write_text(recipe.replace("[loss]", "[loss]\nmask_border_weight = 2.0"))
    cgn, gan = (edited.generator_config("double_colored_mnist", 2, kind) for kind in ("cgn", "gan"))
    assert cgn.loss.mask_border_weight == gan.loss.mask_border_weight == 2.0
    with pytest.raises(ConfigError, match="another CGN recipe"):
        edited.check_recipe("double_colored_mnist", "cgn", cgn)
    edited.check_recipe("double_colored_mnist", "gan", gan)
    config_file.write_text(recipe.replace("[train]", "[train]\nema_decay = 0.5"))
    with pytest.raises(ConfigError, match="another GAN recipe"):
        edited.check_recipe("double_colored_mnist", "gan", edited.generator_config("double_colored_mnist", 2, "gan"))
    with pytest.raises(ConfigError, match="another CGN recipe"):
        edited.train_generator("double_colored_mnist", 0, "cgn")
    with pytest.raises(ConfigError, match="seed0/cgn was trained with another CGN recipe"):
        edited.train_generator("double_colored_mnist", 2, "cgn")  # a seed not started yet
    assert not (runs / "double_colored_mnist" / "seed2").exists()


def test_seeds_are_aggregated_as_mean_and_std(tmp_path, tiny_schedule):
    reproduction = Reproduction(tmp_path, tiny_schedule, datasets=["wildlife_mnist"], seeds=[0, 1, 2], progress=False)
    for seed, test in zip((0, 1, 2), (80.0, 90.0, 100.0), strict=True):
        record = {"seed": seed, "train_acc": 99.0, "test_acc": test, "test_official_acc": test - 1, "seconds": 10.0}
        path = tmp_path / "wildlife_mnist" / f"seed{seed}" / "classifiers" / "original_cgn.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
    datasets, seconds = reproduction.collect()
    entry = datasets["wildlife_mnist"]["original_cgn"]
    assert entry["seeds"] == [0, 1, 2] and seconds == 30.0
    # A record restored without its own time counts through restored.json's sum.
    restored = tmp_path / "wildlife_mnist" / "seed0" / "classifiers" / "original.json"
    restored.write_text(
        json.dumps({"seed": 0, "train_acc": 99, "test_acc": 10, "test_official_acc": 10, "seconds": None})
    )
    (tmp_path / "restored.json").write_text(json.dumps({"seconds": 5.0}))
    assert reproduction.collect()[1] == 35.0
    assert entry["test_acc"] == {"mean": 90.0, "std": 10.0} and entry["train_acc"] == {"mean": 99.0, "std": 0.0}
    assert entry["test_official_acc"]["mean"] == 89.0


def test_markdown_puts_the_paper_beside_ours():
    entry = {
        "seeds": [0, 1, 2],
        "train_acc": {"mean": 99.0, "std": 0.1},
        "test_acc": {"mean": 96.5, "std": 0.4},
        "test_official_acc": {"mean": 96.0, "std": 0.5},
    }
    table = {
        "seeds": [0, 1, 2],
        "quick": False,
        "wall_time_s": 600.0,
        "machine": "test machine",
        "command": "cgn reproduce table2",
        "datasets": {"colored_mnist": {"original_cgn": entry}},
    }
    text = markdown(table)
    paper = PAPER["original_cgn"]["colored_mnist"]
    assert f"| Original + CGN | 99.0 / **96.5** ± 0.4 (96.0) | {paper[0]} / {paper[1]} |" in text
    assert "Original |" not in text  # rows without results are left out
    assert "Unfinished" not in text

    table["datasets"]["colored_mnist"]["cgn"] = {**entry, "seeds": [0], "test_acc": {"mean": 91.0, "std": 0.0}}
    text = markdown(table)
    assert "| CGN only | 99.0 / **91.0** (96.0) · seed 0 |" in text  # one of three seeds so far
    assert "Unfinished: a cell that names its seeds averages only those." in text
    assert "± 0.4 (96.0) |" in text  # the finished cell names none


def test_reproduce_rejects_unknown_datasets(capsys):
    assert main(["reproduce", "table2", "--datasets", "fashion_mnist", "--quick"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_methods_run_only_those_rows_and_share_the_run(tmp_path, data_root, tiny_schedule):
    """Processes running different rows share one run folder (the GPU session runs one per row group)."""
    schedule = replace(tiny_schedule, methods=("original", "irm"))
    make = lambda: Reproduction(  # noqa: E731
        tmp_path / "runs", schedule, datasets=["double_colored_mnist"], seeds=[0], data_dir=data_root, progress=False
    )
    first = make().run(tmp_path / "a.json", command="a", quick=False, methods=["irm"])
    assert set(first["datasets"]["double_colored_mnist"]) == {"irm"}
    status = make().status()
    assert (status.done, status.total, status.untimed) == (1, 2, 1)  # original has never run: no estimate
    assert "1/2 units done" in status.line() and "1 unit(s) of a kind not yet timed" in status.line()
    second = make().run(tmp_path / "b.json", command="b", quick=False, methods=["original"])
    assert set(second["datasets"]["double_colored_mnist"]) == {"original", "irm"}  # reports every finished row
    assert make().status().line() == "table: all 2 units done"
    record = json.loads(
        (tmp_path / "runs" / "double_colored_mnist" / "seed0" / "classifiers" / "original.json").read_text()
    )
    assert record["device"] == "cpu" or record["device"].startswith("cuda")
    with pytest.raises(ConfigError, match="not in this schedule"):
        make().run(tmp_path / "c.json", command="c", quick=False, methods=["cgn"])


def test_a_chosen_device_is_recorded_in_the_generator_config(tmp_path, tiny_schedule):
    def config(device):
        reproduction = Reproduction(tmp_path / device, tiny_schedule, device=device, progress=False)
        return reproduction.generator_config("double_colored_mnist", 0, "cgn")

    assert config("cpu").train.device == "cpu"
    assert config("auto").train.device == load_config(REPO / "configs" / "debug.toml").train.device


def test_reproduce_rejects_unknown_methods(tmp_path, capsys):
    assert main(["reproduce", "table2", "--methods", "lntl", "--quick", "--run-dir", str(tmp_path)]) == 2
    assert "lntl" in capsys.readouterr().err


def test_jobs_hold_whole_generator_groups_per_dataset_and_seed_and_every_unit_once(
    tmp_path, monkeypatch, tiny_schedule
):
    monkeypatch.delenv("CGN_DATA_MIRROR", raising=False)  # no authors' checkpoints
    datasets = ["colored_mnist", "double_colored_mnist"]
    reproduction = Reproduction(tmp_path / "runs", tiny_schedule, datasets=datasets, seeds=[0, 1], data_dir=tmp_path)
    jobs = reproduction.jobs()
    # The authors' rows have no checkpoint here, so three groups per dataset and seed.
    assert len(jobs) == 2 * 2 * 3 and len({job.name for job in jobs}) == len(jobs)
    assert jobs[0] == Job("colored_mnist", 0, ("original_cgn", "cgn"))
    assert all(any(set(job.methods) <= set(group) for group in GENERATOR_GROUPS) for job in jobs)
    # No two jobs train, generate or classify the same unit, and together they hold the table.
    markers = [u.marker for job in jobs for u in reproduction.units(job.methods, [job.dataset], [job.seed])]
    assert len(markers) == len(set(markers)) and set(markers) == {u.marker for u in reproduction.units()}
    only = reproduction.jobs(["cgn"])
    assert [(j.dataset, j.seed, j.methods) for j in only][:2] == [
        ("colored_mnist", 0, ("cgn",)),
        ("double_colored_mnist", 0, ("cgn",)),
    ]
    with pytest.raises(ConfigError, match="lntl"):
        reproduction.jobs(["lntl"])


def test_makespan_deals_each_job_to_the_first_free_worker():
    assert makespan([], 2) == 0.0
    assert makespan([3.0, 2.0, 2.0], 1) == 7.0
    assert makespan([3.0, 2.0, 2.0], 2) == 4.0  # 3 | 2 + 2
    assert makespan([3.0, 2.0, 2.0], 5) == 3.0
    with pytest.raises(ConfigError, match="at least 1"):
        makespan([1.0], 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "at least 1"),
        (["--workers", "2", "--methods", "irm", "--quick"], "not in this schedule"),
        (["--status", "--methods", "lntl", "--quick"], "not in this schedule"),
    ],
)
def test_reproduce_workers_bad_input_is_one_line(tmp_path, capsys, argv, message):
    from cgn.cli import main

    code = main(["reproduce", "table2", "--run-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "t.json"), *argv])
    assert code != 0 and message in capsys.readouterr().err


def test_table_units_share_generators_and_status_costs_them_by_kind(tmp_path, tiny_schedule):
    methods = ("original", "cgn", "original_cgn", "original_gan", "irm")  # no authors' rows
    reproduction = Reproduction(
        tmp_path / "runs", replace(tiny_schedule, methods=methods), datasets=["double_colored_mnist"], seeds=[0, 1]
    )
    units = reproduction.units()
    per_seed = ["original", "cgn", "counterfactuals_cgn", "original_cgn", "cgn", "gan", "counterfactuals_gan"]
    assert [u.name for u in units] == [*per_seed, "original_gan", "irm"] * 2  # one generator per kind and seed
    assert [u.seed for u in units] == [0] * 9 + [1] * 9
    # Seed 0 finished; seed 1 is costed at seed 0's times of the same kind: a CGN's training is
    # not costed as the CGN-only classifier, though both are named "cgn".
    for unit in units[:9]:
        cost = 1000.0 if unit.name == "cgn" and unit.artefact is not None else 100.0
        write_text(unit.marker, json.dumps({"seconds": cost}) + "\n")
    assert reproduction.status().seconds_left == 1800.0
    # Seed 1 left as jobs, costliest first: ours (CGN 1000 s, its data, two rows: 1300 s), the
    # GAN's (300 s), Original and IRM (200 s). Two workers: one takes ours, the other the rest.
    pending = reproduction.pending()
    assert [(job.methods, seconds, untimed) for job, seconds, untimed in pending] == [
        (("original_cgn", "cgn"), 1300.0, 0),
        (("original_gan",), 300.0, 0),
        (("original", "irm"), 200.0, 0),
    ]
    status = reproduction.status(workers=2)
    assert (status.done, status.total, status.untimed, status.seconds_left) == (9, 18, 0, 1300.0)
    assert status.line() == "table: 9/18 units done, about 0.4 h left"
    # A job with a kind of unit never timed goes first: it may hold a CGN's training.
    irm = next(u for u in units[:9] if u.name == "irm")
    write_text(irm.marker, json.dumps({}) + "\n")  # restored without its time
    assert [(job.methods, untimed) for job, _, untimed in reproduction.pending()][0] == (("original", "irm"), 1)


def test_reproduce_status_runs_nothing(tmp_path, capsys):
    run_dir = tmp_path / "runs"
    assert main(["reproduce", "table2", "--quick", "--run-dir", str(run_dir), "--status"]) == 0
    assert capsys.readouterr().out.startswith("table: 0/")
    assert [p.name for p in run_dir.iterdir()] == ["schedule.json"]  # nothing trained or generated


def test_workers_run_each_job_once_as_its_own_process_at_most_so_many_at_a_time(tmp_path, monkeypatch, capsys):
    import subprocess
    import time

    launched, running, popen, fail = [], set(), subprocess.Popen, False

    class Worker:  # still running at its first poll, then done
        def __init__(self, cmd, **kwargs):
            self.polls, self.returncode = 0, None
            running.add(self)
            flags = {flag: cmd.index(flag) for flag in ("--datasets", "--seeds", "--methods", "--device")}
            rows = tuple(cmd[flags["--methods"] + 1 : flags["--device"]])
            job = (cmd[flags["--datasets"] + 1], cmd[flags["--seeds"] + 1], rows)
            launched.append((job, len(running), kwargs["env"]["OMP_NUM_THREADS"], "--quick" in cmd))

        def poll(self):
            self.polls += 1
            if self.polls > 1:
                self.returncode = int(fail)
                running.discard(self)
            return self.returncode

    def fake(cmd, **kwargs):  # only the workers; other commands (git, for the table) run
        return Worker(cmd, **kwargs) if cmd[1:3] == ["-m", "cgn.cli"] else popen(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", fake)
    monkeypatch.delenv("CGN_DATA_MIRROR", raising=False)  # no authors' checkpoints
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    argv = ["reproduce", "table2", "--quick", "--datasets", "colored_mnist", "wildlife_mnist", "--seeds", "0", "1"]
    argv += ["--data-dir", str(tmp_path / "data")]
    assert main([*argv, "--workers", "2", "--run-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "t.json")]) == 0
    assert "8 job(s) left" in capsys.readouterr().out
    # Ours and Original on each dataset and seed (the authors' checkpoints are not here), each
    # once, two at a time, each on its share of the threads.
    rows = [("original_cgn", "cgn"), ("original",)]
    expected = [(d, s, r) for d in ("colored_mnist", "wildlife_mnist") for s in "01" for r in rows]
    assert sorted(job for job, *_ in launched) == sorted(expected)
    assert max(at_once for _, at_once, _, _ in launched) == 2
    assert {(threads, quick) for _, _, threads, quick in launched} == {(str(max(1, (os.cpu_count() or 1) // 2)), True)}
    # A failed worker: the others finish their job, no new one starts, and the error names its log.
    launched.clear()
    fail = True
    with pytest.raises(SystemExit, match="worker failed; see .*colored_mnist_seed0_original_cgn.log"):
        main([*argv, "--workers", "2", "--run-dir", str(tmp_path / "again"), "--out", str(tmp_path / "t.json")])
    assert len(launched) == 2

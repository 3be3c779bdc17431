"""Result provenance: every results file says which code produced it."""

from __future__ import annotations

import json
import subprocess

import pytest

from cgn.environment import git_commit, git_dirty, matmul_gflops, median_seconds, write_result


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_git_dirty_tells_committed_from_uncommitted_code(tmp_path):
    assert git_dirty(tmp_path) is None and git_commit(tmp_path) is None  # not a repository
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_dirty(tmp_path) is False and len(git_commit(tmp_path)) == 40
    (tmp_path / "new.py").write_text("")  # untracked files do not count
    assert git_dirty(tmp_path) is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_dirty(tmp_path) is True


def test_write_result_records_command_and_provenance(tmp_path):
    out = write_result(tmp_path / "r.json", {"value": 1.5}, argv=["bench.py", "--steps", "2"])
    result = json.loads(out.read_text())
    assert result["value"] == 1.5 and result["command"] == "python bench.py --steps 2"
    assert {"machine", "versions", "allocator", "git_commit", "git_dirty"} <= set(result)


def test_median_seconds_times_each_variant_in_turn():
    calls: list[str] = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    seconds = median_seconds(runs, repeats=3)
    assert set(seconds) == {"a", "b"} and all(s >= 0 for s in seconds.values())
    assert calls == ["a", "b"] * 4  # one warm-up round, then the blocks alternate


def test_matmul_gflops_measures_a_rate_and_names_its_formats():
    assert matmul_gflops("fp32", size=64, repeats=2) > 0
    with pytest.raises(ValueError, match="'fp32' or 'bf16'"):
        matmul_gflops("fp64", size=64)

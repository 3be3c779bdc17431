"""The allocator launcher: its policy, the real restart on tcmalloc/jemalloc, and that training
does not notice (the same weights bit for bit)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cgn
from cgn import allocator
from cgn.allocator import ACTIVE_ENV, ENV, AllocatorError, find_library, in_use, plan
from tests.conftest import REPO


@pytest.fixture
def libs(tmp_path):
    """A folder holding (empty stand-ins for) both allocators."""
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    (tmp_path / "libjemalloc.so.2").write_bytes(b"")
    return tmp_path


def test_auto_prefers_tcmalloc_then_jemalloc_then_the_system(libs, tmp_path_factory):
    assert plan({}, [libs]) == libs / "libtcmalloc_minimal.so.4"
    (libs / "libtcmalloc_minimal.so.4").unlink()
    assert plan({ENV: "auto"}, [libs]) == libs / "libjemalloc.so.2"
    assert plan({ENV: "auto"}, [tmp_path_factory.mktemp("empty")]) is None


def test_a_named_allocator_is_used_or_the_error_says_how_to_install_it(libs, tmp_path_factory):
    assert plan({ENV: "jemalloc"}, [libs]) == libs / "libjemalloc.so.2"
    with pytest.raises(AllocatorError, match="apt-get install libtcmalloc-minimal4"):
        plan({ENV: "tcmalloc"}, [tmp_path_factory.mktemp("empty")])
    with pytest.raises(AllocatorError, match="not one of auto, tcmalloc, jemalloc, system"):
        plan({ENV: "mimalloc"}, [libs])


def test_nothing_is_restarted_when_off_already_restarted_or_already_preloaded(libs):
    assert plan({ENV: "system"}, [libs]) is None
    assert plan({ACTIVE_ENV: "/x/libtcmalloc_minimal.so.4"}, [libs]) is None
    assert plan({"LD_PRELOAD": "/opt/libjemalloc.so.2"}, [libs]) is None
    assert in_use({"LD_PRELOAD": "/opt/libjemalloc.so.2"}) == "jemalloc" and in_use({}) == "system"


def test_an_interactive_session_is_never_replaced(libs, monkeypatch, caplog):
    monkeypatch.setattr(allocator, "plan", lambda environ: libs / "libtcmalloc_minimal.so.4")
    monkeypatch.setattr(allocator.os, "execve", lambda *a: pytest.fail("an interactive session was replaced"))
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    allocator.reexec_with_allocator()
    assert "interactive session is not restarted" in caplog.text


def run_python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in (ENV, ACTIVE_ENV, "LD_PRELOAD")}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


INSTALLED = next((kind for kind in ("tcmalloc", "jemalloc") if find_library(kind)), None)
needs_allocator = pytest.mark.skipif(
    INSTALLED is None or not sys.platform.startswith("linux"),
    reason="no tcmalloc or jemalloc here (.ci/run installs libtcmalloc-minimal4)",
)


RESTART = """
import os, sys
from cgn.allocator import ACTIVE_ENV, in_use, reexec_with_allocator
if not os.environ.get(ACTIVE_ENV):
    print(os.getpid(), file=sys.stderr)
reexec_with_allocator()
print(in_use(), os.getpid(), *sys.argv[1:])
"""


@needs_allocator
def test_the_process_restarts_on_the_allocator_with_its_arguments_and_pid():
    done = run_python(RESTART, "a", "b c", **{ENV: "auto"})
    assert done.returncode == 0, done.stderr
    allocator, pid, *args = done.stdout.split()
    assert allocator == INSTALLED and pid == done.stderr.strip() and args == ["a", "b", "c"]
    assert run_python(RESTART, **{ENV: "system"}).stdout.split()[0] == "system"


def test_python_m_cgn_runs_the_command_and_a_bad_allocator_choice_is_one_line():
    def cgn_help(choice: str) -> subprocess.CompletedProcess:
        env = {**os.environ, ENV: choice}
        return subprocess.run([sys.executable, "-m", "cgn", "--help"], env=env, capture_output=True, text=True)

    ok = cgn_help("system")
    assert ok.returncode == 0 and "train-cgn" in ok.stdout
    bad = cgn_help("mimalloc")
    assert bad.returncode == 2 and bad.stderr.startswith("error: CGN_ALLOCATOR='mimalloc'")
    assert len(bad.stderr.strip().splitlines()) == 1


TRAIN = """
import hashlib, sys
import cgn
from cgn.allocator import in_use, reexec_with_allocator
reexec_with_allocator()
config = cgn.load_config("configs/debug.toml", ["train.steps=3", "train.checkpoint_every=3"])
run = cgn.train_cgn(config, sys.argv[1], data_root=sys.argv[2], progress=False)
from safetensors.torch import load_file
tensors = load_file(run.checkpoint)  # the weights and optimiser state (the metadata names the run)
digest = hashlib.sha256(b"".join(tensors[k].numpy().tobytes() for k in sorted(tensors)))
print(in_use(), len(tensors), digest.hexdigest())
"""


@needs_allocator
def test_training_gives_the_same_weights_bit_for_bit_on_either_allocator(tmp_path, data_root):
    runs = {c: run_python(TRAIN, str(tmp_path / c), str(data_root), **{ENV: c}) for c in ("system", "auto")}
    assert all(done.returncode == 0 for done in runs.values()), [d.stderr[-2000:] for d in runs.values()]
    (system, n, digest), (preloaded, _, same) = (runs[c].stdout.split() for c in ("system", "auto"))
    assert system == "system" and preloaded == INSTALLED and int(n) > 10 and digest == same


def test_importing_cgn_does_not_import_torch():
    done = run_python("import sys, cgn, cgn.allocator, cgn.launch; print('torch' in sys.modules)")
    assert done.stdout.strip() == "False", done.stderr
    assert cgn.CGN.__module__ == "cgn.model"  # and the public names still resolve on first use

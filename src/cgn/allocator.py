"""Run on tcmalloc (or jemalloc) instead of glibc's malloc, where one is installed.

A training step on the CPU is thousands of small operators, each allocating its output.
glibc's malloc makes those allocations a measurable share of a step; tcmalloc's thread
caches make them cheap (``benchmarks/allocator_speed.py``: about a tenth of a double-colored
bf16 step). Results do not change: the arithmetic is the same, and a test checks that the
weights after some steps are bit-identical either way. PyTorch's own CPU launcher
(``torch.backends.xeon.run_cpu``) preloads tcmalloc for the same reason.

An allocator has to be in place before the process allocates anything, so it cannot be
switched from inside Python: :func:`reexec_with_allocator` replaces the process (same PID,
same arguments) by one started with ``LD_PRELOAD``. The ``cgn`` command and the benchmarks
call it first thing. ``CGN_ALLOCATOR`` chooses:

- ``auto`` (the default): tcmalloc if found, else jemalloc, else the system's malloc, silently;
- ``tcmalloc`` or ``jemalloc``: that one, or a one-line error saying how to install it;
- ``system``: leave the process alone.

On Debian or Ubuntu: ``apt-get install libtcmalloc-minimal4``. Linux only; elsewhere a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from cgn.errors import CGNError

log = logging.getLogger(__name__)

ENV = "CGN_ALLOCATOR"
#: Set in the replaced process's environment, so that it never replaces itself again.
ACTIVE_ENV = "CGN_ALLOCATOR_ACTIVE"
CHOICES = ("auto", "tcmalloc", "jemalloc", "system")
#: Library names to look for, best first.
LIBRARIES = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
}
INSTALL_HINT = {
    "tcmalloc": "apt-get install libtcmalloc-minimal4 (Debian/Ubuntu) or gperftools",
    "jemalloc": "apt-get install libjemalloc2 (Debian/Ubuntu) or jemalloc",
}
#: tcmalloc reports every allocation above 1 GiB on stderr unless told otherwise.
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


class AllocatorError(CGNError, OSError):
    """``CGN_ALLOCATOR`` names an allocator that is not installed, or an unknown one."""


def _search_dirs() -> list[Path]:
    dirs = [Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"]
    machine = os.uname().machine if hasattr(os, "uname") else ""
    dirs += [Path(f"/usr/lib/{machine}-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib"), Path("/usr/local/lib")]
    return dirs


def find_library(kind: str, search_dirs: list[Path] | None = None) -> Path | None:
    """The path of an installed ``kind`` ("tcmalloc" or "jemalloc") library, or None."""
    for directory in _search_dirs() if search_dirs is None else search_dirs:
        for name in LIBRARIES[kind]:
            if (directory / name).is_file():
                return directory / name
    return None


def in_use(environ: Mapping[str, str] | None = None) -> str:
    """Which allocator this process runs on ("tcmalloc", "jemalloc" or "system"): the libraries
    mapped into it where Linux says, else what ``LD_PRELOAD`` (of ``environ``, if given) names."""
    preload = (os.environ if environ is None else environ).get("LD_PRELOAD", "")
    if environ is None:
        with contextlib.suppress(OSError):
            preload = Path("/proc/self/maps").read_text()
    for kind in LIBRARIES:
        if f"lib{kind}" in preload:
            return kind
    return "system"


def plan(environ: Mapping[str, str], search_dirs: list[Path] | None = None) -> Path | None:
    """The library to preload into a fresh process, or None to run as we are.

    Pure apart from the file search, so that the policy is testable without replacing a process.
    """
    choice = environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise AllocatorError(f"{ENV}={environ[ENV]!r} is not one of {', '.join(CHOICES)}")
    if choice == "system" or environ.get(ACTIVE_ENV) or in_use(environ) != "system":
        return None
    if not sys.platform.startswith("linux"):
        if choice != "auto":
            raise AllocatorError(f"{ENV}={choice} works on Linux only; unset it or set {ENV}=system")
        return None
    for kind in LIBRARIES if choice == "auto" else (choice,):
        found = find_library(kind, search_dirs)
        if found is not None:
            return found
    if choice == "auto":
        return None
    raise AllocatorError(f"{ENV}={choice} but no {choice} library was found: {INSTALL_HINT[choice]}, or set {ENV}=auto")


def reexec_with_allocator() -> None:
    """Replace this process by the same command on tcmalloc/jemalloc, where :func:`plan` says so.

    Call it first thing in a program's entry point, before heavy imports (it returns at once
    when there is nothing to do). An interactive session (a prompt, a notebook kernel) is left
    alone, with a warning. The new process keeps the PID, the arguments and the
    environment, plus ``LD_PRELOAD`` and ``CGN_ALLOCATOR_ACTIVE``.
    """
    library = plan(os.environ)
    if library is None:
        return
    if hasattr(sys, "ps1") or "ipykernel" in sys.modules:  # a prompt or a notebook kernel: never replace it
        log.warning(
            "an interactive session is not restarted; start it with LD_PRELOAD=%s to run on that allocator", library
        )
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = f"{library} {env['LD_PRELOAD']}".strip() if env.get("LD_PRELOAD") else str(library)
    env[ACTIVE_ENV] = str(library)
    for key, value in QUIET.items():
        env.setdefault(key, value)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError as e:  # the process is unchanged: go on with the system's malloc
        log.warning("could not restart on %s (%s); using the system's malloc", library, e)

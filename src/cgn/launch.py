"""The ``cgn`` command's entry point: pick the memory allocator, then run the CLI.

Kept apart from :mod:`cgn.cli` so that nothing heavy (torch) is imported before
:func:`cgn.allocator.reexec_with_allocator` has decided whether to restart the process.
"""

from __future__ import annotations

import sys

from cgn.allocator import AllocatorError, reexec_with_allocator


def main() -> int:
    try:
        reexec_with_allocator()
    except AllocatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from cgn.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())

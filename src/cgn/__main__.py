"""``python -m cgn``: the same as the ``cgn`` command."""

import sys

from cgn.launch import main

sys.exit(main())

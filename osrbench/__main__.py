"""``python -m osrbench``: the ``osrbench`` command (osrbench.cli), for an environment whose scripts
folder is not on PATH."""

from __future__ import annotations

import sys

from osrbench.cli import main

if __name__ == "__main__":
    sys.exit(main())

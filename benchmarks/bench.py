#!/usr/bin/env python3
"""The benchmark's old entry point: ``python benchmarks/bench.py`` is ``python -m benchmarks``."""

import sys
from pathlib import Path

# Run as a script, this directory would come first on the path; the repository must.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

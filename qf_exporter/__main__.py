"""`python -m qf_exporter` is the same as the `qf-exporter` command."""

import sys

from qf_exporter.cli import main

sys.exit(main())

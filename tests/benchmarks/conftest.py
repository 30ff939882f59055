"""The benchmarks import their shared modules by file name (they run as scripts), so their folder goes
on the path here, as it is when `tandem bench` or `python benchmarks/suite.py` runs them."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

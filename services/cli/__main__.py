"""`python -m services.cli` runs the `tandem` command line."""

import sys

from services.cli import main

sys.exit(main())

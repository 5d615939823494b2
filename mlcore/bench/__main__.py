"""`python -m mlcore.bench` runs the benchmark (options: `--help`)."""

import sys

from mlcore.bench.run import main

sys.exit(main())

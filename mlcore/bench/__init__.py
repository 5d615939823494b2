"""The benchmarks: the notebook's pipeline against the engine (`python -m mlcore.bench`) and large-batch quality."""

from mlcore.bench.config import BenchConfig
from mlcore.bench.report import format_table
from mlcore.bench.run import main, run_benchmark

__all__ = ["BenchConfig", "format_table", "main", "run_benchmark"]

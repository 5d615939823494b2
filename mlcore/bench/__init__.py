"""The benchmarks: the notebook's pipeline against the engine (`python -m mlcore.bench`) and large-batch quality."""

from mlcore.bench.run import BenchConfig, format_table, main, run_benchmark

__all__ = ["BenchConfig", "format_table", "main", "run_benchmark"]

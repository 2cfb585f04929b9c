"""Speed and memory benchmark of ApDepth on full-size random-weight architectures (no download)."""

from .runner import BenchConfig, Benchmark, format_goals, format_table, goals, markdown_table

__all__ = ["BenchConfig", "Benchmark", "format_goals", "format_table", "goals", "markdown_table"]

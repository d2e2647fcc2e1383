"""soundnet8 benchmarks."""

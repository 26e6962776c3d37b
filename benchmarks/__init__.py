"""Speed and memory benchmarks, run by hand (see benchmarks/README.md)."""

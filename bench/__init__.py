"""Benchmarks of ganeti_lv against its baselines on the same nodes (see bench/README.md)."""

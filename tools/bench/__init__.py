"""`vcc bench`: the benchmarks of SPEC §7 (cluster, model engine, statistics)."""

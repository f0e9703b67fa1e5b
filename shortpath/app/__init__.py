"""A small example application used by the demo, the tests and the benchmarks."""

"""Helpers shared by the tests and the benchmarks: tiny offline models and generated shape images."""

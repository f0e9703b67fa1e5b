"""Benchmarks: scripts that measure and save figures (never timed unit tests).

Run ``python -m benchmarks --help``.
"""

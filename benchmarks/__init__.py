"""Benchmarks behind docs/benchmarks.md: `python -m benchmarks.bench` (or `make bench`).

A package so that `mnist-train` subprocesses can load `benchmarks.epoch_timer.EpochTimer`
as a Hydra-instantiated callback.
"""

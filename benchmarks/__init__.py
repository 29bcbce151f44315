"""The benchmarks behind docs/ and README's figures: `python -m benchmarks <subcommand>`.

A package so that `mnist-train` subprocesses can load its callbacks by their Hydra `_target_`
(benchmarks/callbacks.py).
"""

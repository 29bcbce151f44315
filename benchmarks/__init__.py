"""The benchmarks behind docs/ and README's figures: `python -m benchmarks <subcommand>`. A
package, so that `mnist-train` loads benchmarks/callbacks.py by its Hydra `_target_`."""

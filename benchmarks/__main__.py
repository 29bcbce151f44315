"""The benchmarks behind docs/ and README's figures, as one command.

Each subcommand measures one thing and writes the page, or prints the table, that quotes it;
`python -m benchmarks <subcommand> --help` says how.
"""

import argparse
import importlib
import sys

# subcommand -> (its module in benchmarks/, what it makes)
SUBCOMMANDS = {
    "tutorial": ("tutorial", "tutorial loop vs plain PyTorch vs mnist-train: docs/benchmarks.md"),
    "overhead": ("overhead", "mnist-train's step against a bare loop's, in one process (table)"),
    "profile": ("profile_step", "where mnist-train's step goes, sampled by py-spy (table)"),
    "accuracy": ("accuracy", "presets over seeds: docs/accuracy.md, docs/presets.md"),
    "studies": ("studies", "the four tutorial studies as sweeps: docs/studies.md"),
    "augment": ("augment_cost", "what data.augment costs per epoch (table for README.md)"),
    "compile": ("compile_ab", "model.compile=true against eager (table for README.md)"),
    "ddp": ("ddp_scaling", "one process against DDP, same global batch (docs/sweeps.md)"),
    "slurm": ("slurm", "the same runs here and on the cluster of make slurm: docs/cluster.json"),
    "parallel": ("parallel_sweep", "a sweep one job at a time and two at a time (README.md)"),
    "images": ("readme_images", "README's pictures in docs/images/, from a finished run"),
    "handwriting": ("handwriting", "photographed digits, default vs preset: docs/handwriting.md"),
    "fashion_authors": ("fashion_authors", "the authors' MLP grid on Fashion-MNIST, rerun"),
    "fashion": ("fashion", "the presets on Fashion-MNIST over seeds, baselines: docs/fashion.md"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    subparsers = parser.add_subparsers(metavar="SUBCOMMAND", required=True)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        # Only the chosen subcommand's module is imported: `tutorial`'s own process must not
        # import Lightning, which changes how torch checks for a GPU (tutorial.LIGHTNING_ENV).
        if argv[:1] == [name]:
            module = importlib.import_module(f"benchmarks.{module_name}")
            sub.description = module.__doc__
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
            module.add_arguments(sub)
            sub.set_defaults(main=module.main)
    args = parser.parse_args(argv)
    args.command_line = " ".join(["python -m benchmarks", *argv])
    args.main(args)


if __name__ == "__main__":
    main()

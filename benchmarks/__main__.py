"""The benchmarks behind docs/benchmarks.md, docs/studies.md and README's figures.

Each subcommand measures one thing and writes JSON (and figures) into docs/, or prints a
table; `table` prints a list of records from such a file as a Markdown table, for the pages.
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

from benchmarks.common import markdown

# subcommand -> (its module in benchmarks/, what it makes)
SUBCOMMANDS = {
    "tutorial": ("tutorial", "tutorial loop vs plain PyTorch vs mnist-train: docs/benchmarks.json"),
    "accuracy": ("accuracy", "presets over seeds, and candidates: docs/accuracy.json"),
    "studies": ("studies", "the four studies as sweeps: docs/studies.json and pictures"),
    "augment": ("augment_cost", "what data.augment costs per epoch (a table)"),
    "compile": ("compile_ab", "model.compile=true against eager (a table)"),
    "ddp": ("ddp_scaling", "one process against DDP, same global batch (a table)"),
    "slurm": ("slurm", "the same runs here and on make slurm's cluster: docs/cluster.json"),
    "parallel": ("parallel_sweep", "a sweep one job at a time and two at a time (a table)"),
    "images": ("readme_images", "README's pictures in docs/images/, from a finished run"),
    "handwriting": ("handwriting", "photographed digits, default vs preset: docs/handwriting.json"),
    "fashion_authors": ("fashion_authors", "the authors' MLP grid on Fashion-MNIST, rerun"),
}


def table(path: Path, key: str) -> str:
    """The records at `key` (dotted, list indices as numbers) of a JSON file, as a table."""
    records = json.loads(path.read_text())
    for part in key.split(".") if key else []:
        records = records[int(part)] if isinstance(records, list) else records[part]
    return markdown(records)


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
            module.add_arguments(sub)
            sub.set_defaults(main=module.main)
    sub = subparsers.add_parser("table", help="print records of a JSON file as a table")
    sub.add_argument("file", type=Path)
    sub.add_argument("key", nargs="?", default="", help="dotted path to the records")
    sub.set_defaults(main=lambda args: print(table(args.file, args.key)))
    args = parser.parse_args(argv)
    args.command_line = " ".join(["python -m benchmarks", *argv])
    args.main(args)


if __name__ == "__main__":
    main()

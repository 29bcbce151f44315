"""The benchmarks behind docs/benchmarks.md, docs/studies.md and README's figures.

Each subcommand measures one thing and writes JSON (and figures) into docs/ (rows it returns:
into docs/benchmarks.json, printed as a table); `table` prints the records of such a file
as a Markdown table, for the pages.
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

from benchmarks.common import DOCS, markdown, save

DATA = ["mnist", "fashion_mnist"]  # a list: the choices, the first the default
# subcommand -> (module.function, what it makes[, {option: default or (default, help)}]); False
# is a flag, a type an option without default, [type] one or more values.
SUBCOMMANDS = {
    "tutorial": ("tutorial.main", "(a) tutorial, (b) plain PyTorch, (c) mnist-train side by side"),
    "accuracy": ("accuracy.main", "presets over seeds, and candidates: docs/accuracy.json", {
        "--presets": ("best_cpu", "experiment names, or default"), "--seeds": 3, "--data": DATA,
        "--candidates": (False, "run the candidates in the JSON file again")}),
    "studies": ("studies.main", "the four studies as sweeps: docs/studies.json and pictures", {
        "--studies": ("regularization,activation,batch_size,l1_vs_l2", "the ones to (re)run"),
        "--data": DATA}),
    "augment": ("tables.augment", "what data.augment costs per epoch"),
    "compile": ("tables.compile", "model.compile=true against eager"),
    "ddp": ("tables.ddp", "one process against DDP, the same global batch"),
    "slurm": ("slurm.main", "the same runs here and on make slurm's cluster: docs/cluster.json"),
    "parallel": ("tables.parallel", "a sweep one job at a time and two at a time"),
    "images": ("readme_images.main", "README's pictures in docs/images/, from a finished run",
               {"run": (Path, "a finished run: outputs/runs/<run>")}),
    "handwriting": ("handwriting.main", "photographed digits, read: docs/handwriting.json", {
        "--seeds": ([int], "the sets, pooled (default: 2026; the development sets: 1 3 4)"),
        "--ckpts": ([str], "NAME=PATH: measure these, not a new default and preset"),
        "--json": (DOCS / "handwriting.json", "the figures go to images/ beside it")}),
    "fashion_authors": ("fashion_authors.main", "the authors' MLP grid on Fashion-MNIST, rerun"),
}  # fmt: skip


def option(parser: argparse.ArgumentParser, name: str, default, help: str | None = None) -> None:
    if default is False:
        parser.add_argument(name, action="store_true", help=help)
    elif isinstance(default, list):
        kind = {"nargs": "+", "type": default[0]} if isinstance(default[0], type) else {}
        parser.add_argument(name, **kind or {"choices": default, "default": default[0]}, help=help)
    elif isinstance(default, type):
        parser.add_argument(name, type=default, help=help)
    else:
        parser.add_argument(name, type=type(default), default=default, help=help)


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
    for name, (function, summary, *options) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        for flag, spec in (options or [{}])[0].items():
            option(sub, flag, *spec if isinstance(spec, tuple) else (spec,))
        module, function = function.split(".")
        # Only the chosen subcommand's module is imported: `tutorial`'s own process must not
        # import Lightning, which changes how torch checks for a GPU (tutorial.LIGHTNING_ENV).
        if argv[:1] == [name]:
            sub.set_defaults(
                main=getattr(importlib.import_module(f"benchmarks.{module}"), function)
            )
    sub = subparsers.add_parser("table", help="print records of a JSON file as a table")
    sub.add_argument("file", type=Path)
    sub.add_argument("key", nargs="?", default="", help="dotted path to the records")
    sub.set_defaults(main=lambda args: print(table(args.file, args.key)))
    args = parser.parse_args(argv)
    args.command_line = " ".join(["python -m benchmarks", *argv])
    rows = args.main(args)
    if rows is not None:  # a list of records (tables.py)
        save(DOCS / "benchmarks.json", (argv[0],), {"rows": rows}, args.command_line)
        print(markdown(rows))


if __name__ == "__main__":
    main()

"""The Fashion-MNIST authors' MLP baselines, rerun here (docs/fashion.md quotes them).

    python -m benchmarks fashion_authors

Debian's package of the data set ships the authors' benchmark: its grid of parameters
(benchmark/baselines.json) and the script that ran it (benchmark/runner.py), not the accuracies,
which only their paper and website give. So the MLPClassifier settings of that grid are run
again as runner.py runs them: every pixel standardised (scikit-learn's StandardScaler, fit on
the 60 000 training images), the training images shuffled, scikit-learn's MLPClassifier with
the setting and its defaults otherwise (Adam, at most 200 passes) fit on all of them and scored
on the 10 000 test images. Once each, where runner.py repeats a setting up to twice; in float32
rather than float64, to halve the time. Each result is kept in docs/fashion_authors.json as it
comes, so an interrupted run keeps what it measured.
"""

import argparse
import ast
import json
import time

import numpy as np

from benchmarks.common import data_dir, machine, machine_line
from benchmarks.fashion import AUTHORS_RERUN as RESULTS
from benchmarks.fashion import fetch_baselines

SEED = 0  # for the shuffle and the initial weights: runner.py leaves both unseeded


def settings(grid: list[dict]) -> list[dict]:
    """The grid's MLPClassifier settings as scikit-learn takes them (runner.py reads a tuple
    written as a string, "(100,10,)"), the widest first."""
    parsed = [
        p | {"hidden_layer_sizes": ast.literal_eval(str(p["hidden_layer_sizes"]))} for p in grid
    ]
    return sorted(parsed, key=lambda p: -max(p["hidden_layer_sizes"]))


def fashion_arrays() -> tuple[np.ndarray, ...]:
    """Standardised float32 training and test images, with their labels."""
    from sklearn.preprocessing import StandardScaler

    from mnist_lightning.data.datasets import raw_dir, read_idx

    raw = raw_dir(data_dir(), "fashion_mnist")
    x, xt = (read_idx(raw / f"{s}-images-idx3-ubyte").flatten(1).numpy() for s in ("train", "t10k"))
    y, yt = (read_idx(raw / f"{s}-labels-idx1-ubyte").numpy() for s in ("train", "t10k"))
    scaler = StandardScaler().fit(x.astype(np.float64))
    return scaler.transform(x).astype(np.float32), y, scaler.transform(xt).astype(np.float32), yt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-iter", type=int, default=200, help="scikit-learn's default: 200")


def main(args: argparse.Namespace) -> None:
    import sklearn
    from sklearn.neural_network import MLPClassifier
    from sklearn.utils import shuffle

    x, y, xt, yt = fashion_arrays()
    record = {
        "measured": time.strftime("%Y-%m-%d"),
        "machine": machine_line(machine()),
        "command": args.command_line,
        "sklearn": sklearn.__version__,
        "runs": [],
    }
    for setting in settings(fetch_baselines()["mlp_grid"]):
        started = time.perf_counter()
        xs, ys = shuffle(x, y, random_state=SEED)
        model = MLPClassifier(**setting, max_iter=args.max_iter, random_state=SEED)
        accuracy = float(model.fit(xs, ys).score(xt, yt))
        record["runs"].append(
            {
                "setting": {k: str(v) for k, v in setting.items()},
                "test_acc": accuracy,
                "passes": model.n_iter_,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(record["runs"][-1], flush=True)
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULTS}")

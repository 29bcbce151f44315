"""The Fashion-MNIST authors' MLP baselines, rerun: docs/fashion.json's "authors".

Their benchmark (benchmark/baselines.json and runner.py, in Debian's dataset-fashion-mnist)
holds the grid they ran, not the accuracies. Run as runner.py runs it: pixels standardised on
the training images, which are shuffled, scikit-learn's MLPClassifier with the setting and its
defaults otherwise, scored on the test images; once each (runner.py: up to twice), in float32.
"""

import argparse
import itertools
import time

import numpy as np

from benchmarks.common import DOCS, data_dir, save

# baselines.json's MLPClassifier block: activation x hidden_layer_sizes, the widest first.
GRID = [
    {"activation": a, "hidden_layer_sizes": h}
    for h, a in itertools.product([(100, 10), (100,), (10, 10), (10,)], ["relu", "tanh"])
]
SEED = 0  # for the shuffle and the initial weights: runner.py leaves both unseeded


def fashion_arrays() -> tuple[np.ndarray, ...]:
    """Standardised float32 training and test images, with their labels."""
    from sklearn.preprocessing import StandardScaler

    from mnist_lightning.data.datasets import read_idx

    raw = data_dir() / "FashionMNIST" / "raw"
    x, xt = (read_idx(raw / f"{s}-images-idx3-ubyte").flatten(1).numpy() for s in ("train", "t10k"))
    y, yt = (read_idx(raw / f"{s}-labels-idx1-ubyte").numpy() for s in ("train", "t10k"))
    scaler = StandardScaler().fit(x.astype(np.float64))
    return scaler.transform(x).astype(np.float32), y, scaler.transform(xt).astype(np.float32), yt


def main(args: argparse.Namespace) -> None:
    import sklearn
    from sklearn.neural_network import MLPClassifier
    from sklearn.utils import shuffle

    x, y, xt, yt = fashion_arrays()
    runs = []
    for setting in GRID:
        started = time.perf_counter()
        xs, ys = shuffle(x, y, random_state=SEED)
        model = MLPClassifier(**setting, random_state=SEED)  # max_iter 200, as theirs
        runs.append({k: str(v) for k, v in setting.items()})
        runs[-1]["test_acc"] = float(model.fit(xs, ys).score(xt, yt))
        runs[-1] |= {"passes": model.n_iter_, "seconds": round(time.perf_counter() - started, 1)}
        print(runs[-1], flush=True)
        result = {"sklearn": sklearn.__version__, "runs": runs}
        save(DOCS / "fashion.json", ("authors",), result, args.command_line)

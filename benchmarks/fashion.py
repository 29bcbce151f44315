"""Fashion-MNIST: the tutorial presets, the default and `fashion_best_cpu` over seeds, against
the data set's authors' MLP baselines, and the studies on the harder data set (docs/fashion.md).

    python -m benchmarks fashion [--seeds 3]            # baselines, every preset, the page
    python -m benchmarks fashion --candidates --presets ""   # how fashion_best_cpu was chosen
    python -m benchmarks fashion --presets ""           # redraw the page only (no training)
    python -m benchmarks studies --data fashion_mnist   # the studies' section of the page

Each run is a real `mnist-train data=fashion_mnist ...` subprocess on the CPU, measured as
`benchmarks accuracy` measures MNIST's presets (its `train` and `with_seeds`). Everything the
page shows is kept in docs/fashion.json (each run's figures and val/acc curve, the candidates,
the baselines read from Debian's package), so the page can be redrawn without training; the
MNIST column is read from what docs/presets.md and docs/accuracy.json were made of.

The authors' baselines come from their own files, as Debian's package `dataset-fashion-mnist`
ships them (fetched with `apt-get download` and read without installing it, as
mnist_lightning/data/download.py reads its images): `benchmark/baselines.json` and the README's
table of submitted benchmarks.
"""

import argparse
import itertools
import json
import math
import re
import statistics
import tempfile
import time
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from benchmarks import studies
from benchmarks.accuracy import (
    DOCS,
    TUTORIALS,
    WIDE,
    mean_std,
    train,
    with_seeds,
)
from benchmarks.accuracy import RESULTS as MNIST_ACCURACY
from benchmarks.common import machine, machine_line
from mnist_lightning.data.datasets import DEBIAN_PACKAGE, apt_download, gunzip, package_files
from mnist_lightning.errors import DataError

RESULTS = DOCS / "fashion.json"
AUTHORS_RERUN = DOCS / "fashion_authors.json"  # benchmarks/fashion_authors.py writes it
PAGE = DOCS / "fashion.md"
CURVES = DOCS / "images" / "fashion_curves.png"
MNIST_PRESETS_PAGE = DOCS / "presets.md"
FASHION = ["data=fashion_mnist"]
# The recipes fashion_best_cpu was chosen from, on the validation split (seed 42, one run
# each): accuracy.py's wide network, with the augmentations that suit clothes (no elastic
# field: that imitates handwriting), for a budget of a few minutes here.
CANDIDATE_EPOCHS = 25
CANDIDATES = {
    f"no augmentation, {CANDIDATE_EPOCHS} epochs": [
        *FASHION,
        *WIDE,
        "model.dropout=0.3",
        f"trainer.max_epochs={CANDIDATE_EPOCHS}",
    ],
    f"translate ±2 px, {CANDIDATE_EPOCHS} epochs": [
        *FASHION,
        *WIDE,
        "model.dropout=0.3",
        "data.augment=translate",
        f"trainer.max_epochs={CANDIDATE_EPOCHS}",
    ],
    f"mild affine (rotation 5°, scale 5 %, shear 5°, shift 2 px), {CANDIDATE_EPOCHS} epochs": [
        *FASHION,
        *WIDE,
        "model.dropout=0.3",
        "data.augment=affine",
        "data.max_rotation=5",
        "data.max_scale=0.05",
        "data.max_shear=5",
        f"trainer.max_epochs={CANDIDATE_EPOCHS}",
    ],
}
BEST = "fashion_best_cpu"
# The presets measured on Fashion-MNIST: accuracy.py's tutorial rows (the default first), then
# ours. Their overrides for Fashion-MNIST; the MNIST command is the same without the data set.
PRESETS = {name: [*FASHION, *overrides] for name, overrides in TUTORIALS.items()} | {
    BEST: [f"experiment={BEST}"]
}
# The MNIST counterpart of fashion_best_cpu (docs/accuracy.json): MNIST's best_cpu-style preset.
MNIST_BEST = "best_cpu"
# Debian's package: where it keeps the authors' benchmark files, and how much of one is read.
DOC_FOLDER = f"usr/share/doc/{DEBIAN_PACKAGE}"
BASELINES_MEMBER = f"{DOC_FOLDER}/benchmark/baselines.json"
README_MEMBER = f"{DOC_FOLDER}/README.md.gz"
MAX_MEMBER_BYTES = 2**20  # baselines.json is 3.6 kB, README.md.gz 8 kB
BASELINE_CLASSIFIER = "MLPClassifier"


# --- the authors' baselines


def package_members(deb: Path, wanted: set[str]) -> dict[str, bytes]:
    """The regular files `wanted` (paths inside the package), each at most MAX_MEMBER_BYTES,
    read with download.py's reader of Debian packages; all of them, or a DataError."""
    found = package_files(deb, wanted, MAX_MEMBER_BYTES)
    missing = wanted - set(found)
    if missing:
        raise DataError(f"{deb.name} holds no {', '.join(sorted(missing))}.")
    return found


def mlp_grid(baselines: dict) -> list[dict]:
    """The MLPClassifier settings of the authors' benchmark grid (baselines.json), one dict of
    parameters per setting, as the authors' runner.py expands them: the product of every list
    of values in every block, the first varying slowest, with the "common" parameters added."""
    blocks = baselines.get("classifiers", {}).get(BASELINE_CLASSIFIER)
    if not isinstance(blocks, list) or not blocks:
        raise DataError(f"baselines.json has no {BASELINE_CLASSIFIER} entry.")
    keys = [key for block in blocks for key in block]
    values = [block[key] for block in blocks for key in block]
    common = baselines.get("common") or {}
    return [dict(zip(keys, combo, strict=True)) | common for combo in itertools.product(*values)]


def table_cells(line: str) -> list[str]:
    """The cells of one markdown table row, stripped."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def submitted_mlps(readme: str) -> list[dict]:
    """The README's "submitted benchmarks" rows whose classifier is an MLP (classifier,
    preprocessing, Fashion test accuracy, MNIST test accuracy, submitter)."""
    rows = []
    for line in readme.splitlines():
        cells = table_cells(line)
        if len(cells) < 5 or not re.match(r"MLP\b", cells[0]):
            continue
        submitter = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", cells[4])
        rows.append(
            {
                "classifier": cells[0],
                "preprocessing": cells[1],
                "fashion_test_acc": float(cells[2]),
                "mnist_test_acc": None if cells[3] in ("-", "") else float(cells[3]),
                "submitter": submitter,
            }
        )
    return rows


def read_baselines(deb: Path) -> dict:
    """What the page quotes from the package: its name and the rows read."""
    files = package_members(deb, {BASELINES_MEMBER, README_MEMBER})
    readme = gunzip(files[README_MEMBER], f"{deb.name}: {README_MEMBER}").decode()
    return {
        "package": deb.name,
        "member": BASELINES_MEMBER,
        "mlp_grid": mlp_grid(json.loads(files[BASELINES_MEMBER])),
        "readme_member": README_MEMBER,
        "submitted_mlps": submitted_mlps(readme),
    }


def fetch_baselines() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-fashion-deb-") as tmp:
        return read_baselines(apt_download(Path(tmp)))


# --- training


def choose_best() -> dict:
    """Each candidate once with seed 42; val/acc_best is what chose fashion_best_cpu."""
    chosen = {}
    for name, overrides in CANDIDATES.items():
        run = train(overrides, 42)
        chosen[name] = {k: run[k] for k in ("val_acc_best", "test_acc", "fit_seconds")}
        print(name, chosen[name], flush=True)
    return {
        "measured": time.strftime("%Y-%m-%d"),
        "machine": machine_line(machine()),
        "runs": chosen,
    }


# --- MNIST's figures for the same presets


def mnist_presets() -> dict[str, str]:
    """command -> test accuracy cell ("98.65 ± 0.04") of docs/presets.md's table, the page
    `benchmarks accuracy --page presets` writes (its raw runs are not kept)."""
    page, figures = MNIST_PRESETS_PAGE, {}
    for line in page.read_text().splitlines() if page.is_file() else []:
        cells = table_cells(line)
        if len(cells) == 4 and cells[3].startswith("`mnist-train"):
            figures[cells[3].strip("`")] = cells[1]
    return figures


def mnist_best() -> str | None:
    """best_cpu's test accuracy on MNIST (docs/accuracy.json), mean ± std over its seeds."""
    results = json.loads(MNIST_ACCURACY.read_text()) if MNIST_ACCURACY.is_file() else {}
    if MNIST_BEST not in results:
        return None
    return mean_std([100 * r["test_acc"] for r in results[MNIST_BEST]["runs"]])


def command(overrides: list[str]) -> str:
    return " ".join(["mnist-train", *overrides])


def mnist_command(name: str) -> str:
    return command([f"experiment={MNIST_BEST}"] if name == BEST else TUTORIALS[name])


# --- the page


def draw_curves(presets: dict, path: Path) -> None:
    fig = Figure(figsize=(7.5, 4.4), dpi=110)
    ax = fig.subplots()
    colours = colormaps["tab10"].colors
    for (name, entry), colour in zip(presets.items(), colours, strict=False):
        for i, run in enumerate(entry["runs"]):
            accs = [100 * acc for _, acc in run["curve"]]
            ax.plot(
                range(1, len(accs) + 1),
                accs,
                "o-" if len(accs) < 15 else "-",
                markersize=3,
                color=colour,
                alpha=0.9 if i == 0 else 0.35,
                label=label(name) if i == 0 else None,
            )
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 3, 5, 10, 20, 30], labels=["1", "2", "3", "5", "10", "20", "30"])
    ax.minorticks_off()
    ax.set_xlabel("epoch (log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(80, 92.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("Fashion-MNIST: validation accuracy after each epoch, every seed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def label(name: str) -> str:
    return f"{BEST} (784-1024-1024-10)" if name == BEST else name.split(" (")[0]


def preset_rows(presets: dict) -> list[str]:
    mnist = mnist_presets()
    rows = []
    for name, entry in presets.items():
        runs = entry["runs"]
        fashion = mean_std([100 * r["test_acc"] for r in runs])
        on_mnist = mnist_best() if name == BEST else mnist.get(mnist_command(name))
        description = (
            f"`{BEST}` ({describe_best()})" if name == BEST else name.replace("tutorial ", "")
        )
        rows.append(
            f"| {description} | {fashion} | {mean_std([r['fit_seconds'] for r in runs], 0)} | "
            f"`{command(PRESETS[name])}` | {on_mnist or '–'} | `{mnist_command(name)}` |"
        )
    return rows


def describe_best() -> str:
    return "784-1024-1024-10, dropout 0.3, label smoothing 0.1, 25 epochs, no distortions"


def baseline_lines(baselines: dict | None) -> list[str]:
    if not baselines:
        return ["(Not fetched yet: `python -m benchmarks fashion --baselines`.)", ""]
    grid = describe_grid(baselines["mlp_grid"])
    lines = [
        f"The authors' MLP baselines are scikit-learn's `{BASELINE_CLASSIFIER}`. Debian's "
        f"package (`{baselines['package']}`) ships the authors' benchmark configuration, "
        f"`{baselines['member']}`, and it holds **the grid of parameters they ran, not their "
        f"results**: for `{BASELINE_CLASSIFIER}`, {grid}, everything else scikit-learn's "
        "default (Adam, at most 200 iterations); their `runner.py`, beside it, standardises "
        "the pixels, trains each setting up to twice on the 60 000 training images and scores "
        "it on the 10 000 test images. The test accuracies of that grid are published in the "
        "paper (Xiao, Rasul and Vollgraf 2017, arXiv:1708.07747, Table 3) and on the authors' "
        "benchmark website, neither of which is in the package, so this page does "
        "not quote them.",
        "",
        *rerun_lines(len(baselines["mlp_grid"])),
    ]
    if baselines["submitted_mlps"]:
        lines += [
            "The package's README (`" + baselines["readme_member"] + "`) does carry test "
            "accuracies for MLPs in its table of *submitted* benchmarks, which the authors "
            "list without having tested them:",
            "",
            "| classifier (submitted) | preprocessing | Fashion test acc | MNIST test acc | "
            "submitter |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| {r['classifier']} | {r['preprocessing']} | "
                f"{100 * r['fashion_test_acc']:.2f} % | "
                + (f"{100 * r['mnist_test_acc']:.2f} %" if r["mnist_test_acc"] else "–")
                + f" | {r['submitter']} |"
                for r in baselines["submitted_mlps"]
            ),
            "",
        ]
    return lines


def rerun_lines(grid_size: int) -> list[str]:
    """The authors' grid as `python -m benchmarks fashion_authors` ran it again here."""
    if not AUTHORS_RERUN.is_file():
        return ["(Not rerun yet: `python -m benchmarks fashion_authors`.)", ""]
    rerun = json.loads(AUTHORS_RERUN.read_text())
    rows = [
        f"| {r['setting']['activation']} | {r['setting']['hidden_layer_sizes']} | "
        f"{100 * r['test_acc']:.2f} % | {r['passes']} | {r['seconds']:.0f} s |"
        for r in sorted(rerun["runs"], key=lambda r: -r["test_acc"])
    ]
    best = max(rerun["runs"], key=lambda r: r["test_acc"]) if rerun["runs"] else None
    return [
        f"So the grid was run again here, as `runner.py` runs it, once per setting: "
        f"{len(rerun['runs'])} of its {grid_size} settings, measured {rerun['measured']} on "
        f"{rerun['machine']} by `{rerun['command']}` (benchmarks/fashion_authors.py; "
        + (f"scikit-learn {rerun['sklearn']}, " if "sklearn" in rerun else "")
        + "float32, seed 0)"
        + (
            f". The best, {best['setting']['activation']} {best['setting']['hidden_layer_sizes']}"
            f", reads {100 * best['test_acc']:.2f} % of the test images"
            if best
            else ""
        )
        + ":",
        "",
        "| activation | hidden layers | test accuracy | passes over the data | time |",
        "| --- | --- | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def describe_grid(settings: list[dict]) -> str:
    """ "the 8 combinations of a ∈ {x, y} × b ∈ {...}" when the settings are a full product of
    their values (the authors' grid is), else every setting."""
    values = {k: list(dict.fromkeys(str(s[k]) for s in settings)) for k in settings[0]}
    if math.prod(len(v) for v in values.values()) == len(settings):
        return f"the {len(settings)} combinations of " + " × ".join(
            f"{k} ∈ {{{', '.join(v)}}}" for k, v in values.items()
        )
    return f"{len(settings)} settings, " + ", ".join(
        "(" + ", ".join(f"{k}={v}" for k, v in s.items()) + ")" for s in settings
    )


# What the candidates showed, written from their measured table (docs/fashion.json).
CANDIDATE_LESSON = (
    "Here the distortions did harm: shifting the clothes by up to 2 pixels, or rotating, "
    "scaling and shearing them a little, cost about 2 points of validation accuracy (and 2.5 "
    "of test accuracy) against the same network on the images as they are, in the same 25 "
    "epochs. Most likely because Fashion-MNIST's pictures are centred and scaled so that the "
    "object fills the frame (a shift crops a garment's edge), and an MLP, which has no notion "
    "of neighbouring pixels, must learn each shifted copy anew; more epochs might change the "
    "order, which this budget did not test. The training times of the augmented runs are "
    "inflated: other jobs shared the machine while they ran, so they are no measure of what "
    "the distortions cost (`python -m benchmarks augment` is)."
)


def candidate_lines(candidates: dict | None) -> list[str]:
    if not candidates:
        return []
    best = max(candidates["runs"], key=lambda n: candidates["runs"][n]["val_acc_best"])
    rows = [
        f"| {name}{' (= `' + BEST + '`)' if name == best else ''} | "
        f"{100 * r['val_acc_best']:.2f} % | {100 * r['test_acc']:.2f} % | "
        f"{r['fit_seconds']:.0f} s | `{command(CANDIDATES[name])} seed=42` |"
        for name, r in candidates["runs"].items()
    ]
    return [
        f"## How {BEST} was chosen",
        "",
        "By `val/acc_best` on the 5 000 validation images (held out of the 60 000 training "
        "images), one run each with seed 42; the test column is shown for completeness and "
        "chose nothing. All are 784-1024-1024-10, dropout 0.3, label smoothing 0.1, AdamW "
        "2e-3 one-cycle, batch 128 (accuracy.py's recipe for MNIST's candidates), "
        f"{CANDIDATE_EPOCHS} epochs; "
        "they differ in the distortions of the training images. Elastic distortions, which "
        "imitate handwriting, were not tried.",
        "",
        CANDIDATE_LESSON,
        "",
        "| recipe | val/acc_best | test/acc | training time | command |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Measured {candidates['measured']} on {candidates['machine']}; re-run with "
        '`.venv/bin/python -m benchmarks fashion --candidates --presets ""`.',
        "",
    ]


def study_columns(table: list[str]) -> tuple[list[str], list[list[str]]]:
    """A markdown table's header cells and rows of cells (without the --- line)."""
    cells = [table_cells(line) for line in table]
    return cells[0], cells[2:]


# The columns that name a study's job (the rest are its figures)
STUDY_KEYS = {"regularization": 2, "activation": 1, "batch_size": 1, "l1_vs_l2": 2}


def study_table(study: str, fashion: list[str], mnist: list[str] | None) -> list[str]:
    """The Fashion-MNIST table with MNIST's val/acc_best (and test/acc) beside each row."""
    header, rows = study_columns(fashion)
    keys = STUDY_KEYS[study]
    extra: dict[tuple[str, ...], list[str]] = {}
    shown = [c for c in ("val/acc_best", "test/acc") if mnist and c in study_columns(mnist)[0]]
    if mnist:
        mnist_header, mnist_rows = study_columns(mnist)
        for row in mnist_rows:
            extra[tuple(row[:keys])] = [row[mnist_header.index(c)] for c in shown]
    header = [*header[:keys], *(f"Fashion {c}" for c in header[keys:])]
    header += [f"MNIST {c}" for c in shown]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        beside = extra.get(tuple(row[:keys]), ["–"] * len(shown))
        lines.append("| " + " | ".join([*row, *beside]) + " |")
    return lines


# What changes on the harder data set, written from the measured tables (docs/studies.json and
# docs/studies_fashion.json) as WRITTEN_FROM records them: the page is not written if they change.
FASHION_LESSONS = {
    "regularization": (
        "The 1 000 clothes are harder to generalise from: without dropout every network still "
        "learns all of them (100 % training accuracy), but gets only about 82 % of the "
        "validation images right against 89 % on MNIST, a gap of 18 points instead of 11. "
        "The best settings lift validation accuracy by about 0.75 points and test accuracy by "
        "at most 0.63 (81.48 → 82.11 % with dropout 0.3 and weight decay 1.0) over no "
        "regularisation, where dropout 0.6 gained 1.4 on MNIST; with one run per job that is "
        "within noise, so this sweep shows no sign that regularisation helps on clothes, and "
        "cannot tell whether it helps less than on MNIST. Dropout 0.6 is again the setting "
        "that holds training accuracy down, further than on MNIST (96-97 % against "
        "99.6-100 %), without a better result; weight decay moves validation accuracy by about "
        "0.4 points at most, within noise too."
    ),
    "activation": (
        "Sigmoid learns nothing on either data set (10 %, its first layer getting a few "
        "millionths of the last layer's gradient; mnist-train reports such a job as failed, "
        "and the benchmark reads the rest of the sweep). Tanh, ReLU and leaky ReLU reach 81-82 % "
        "in the 3 epochs, 13 points below MNIST. GELU is the one clear difference, far beyond "
        "the noise although each side is one run: it fails on MNIST (11 %, first-layer "
        "gradient 2 % of the last's) but learns on Fashion-MNIST (74.8 %, the ratio 1.5), 6-7 "
        "points behind the others. A likely reason, not tested further: both data sets are "
        "normalised with MNIST's mean and standard deviation, so Fashion-MNIST's brighter "
        "pixels (mean 0.286 against 0.131) give larger pre-activations, away from zero where "
        "GELU's slope is about 1/2."
    ),
    "batch_size": (
        "The same lesson as on MNIST: one image per step and 64 per step end within 1.2 points "
        "of each other (83.4 and 84.5 % test accuracy), 10-11 points below MNIST, and the full "
        "batch is far behind (66.3 %, only 4.6 points below MNIST's 70.9 %: five steps leave "
        "both data sets far from trained). Batch 1 took 86 s for the same 50 000 steps that "
        "took 57 s on MNIST; the machine was shared with other jobs at times in this session, "
        "so the two times are not a comparison."
    ),
    "l1_vs_l2": (
        "Fewer weights end near zero on Fashion-MNIST: 5.4 % without a penalty, 7.2 % with L2 "
        "and 22-24 % with L1, against 7, 16 and 34 % on MNIST, most likely because clothes "
        "cover far more of the frame than digits, so fewer input pixels never carry anything "
        "and fewer first-layer weights lose all their data gradient. L1 still makes three "
        "times as many near-zero weights as L2. Its validation accuracy is 0.16 points below "
        "no penalty's, L2's 0.5 below: both within a single run's noise, so no sign that "
        "either penalty costs accuracy here."
    ),
}
VALIDATION_IMAGES = 5000


def study_results() -> tuple[dict, dict]:
    """docs/studies_fashion.json and docs/studies.json ({} where not measured)."""
    return tuple(
        json.loads(path.read_text()) if path.is_file() else {}
        for path in (studies.FASHION_RESULTS, studies.RESULTS)
    )


def noise(acc: float) -> float:
    """The standard error, in points, of one run's accuracy `acc` (%) on the validation split."""
    return 100 * math.sqrt(acc / 100 * (1 - acc / 100) / VALIDATION_IMAGES)


def studies_lines() -> list[str]:
    fashion, mnist = study_results()
    if not fashion:
        return [
            "## The studies on Fashion-MNIST",
            "",
            "Not measured yet: `.venv/bin/python -m benchmarks studies --data fashion_mnist`.",
            "",
        ]
    machines = sorted({e.get("machine", studies.MACHINE) for e in fashion.values()})
    lines = [
        "## The studies on Fashion-MNIST",
        "",
        "Each study of [studies.md](studies.md) runs on Fashion-MNIST with one override, "
        "`mnist-train -m experiment=study_<name> data=fashion_mnist` (every job's "
        "`.hydra/config.yaml` says `dataset: fashion_mnist`; the benchmark checks it). The "
        "tables are read back from those sweeps by `.venv/bin/python -m benchmarks studies "
        f"--data fashion_mnist` on {'; '.join(machines)}, with MNIST's figures from "
        "studies.md beside them.",
        "",
        "Each job is one training run (one seed), as on MNIST. One run's accuracy on the "
        f"{VALIDATION_IMAGES // 1000} 000 validation images varies by about half a point (one "
        f"binomial standard error: {noise(82):.2f} points at 82 %, {noise(89):.2f} at 89 %), "
        "so differences of about half a point are within noise; the readings below say where "
        "a difference is larger.",
        "",
    ]
    for study in studies.STUDIES:
        if study not in fashion:
            continue
        entry = fashion[study]
        lines += [
            f"### {studies.TITLES[study]}",
            "",
            f"`mnist-train -m experiment=study_{study} data=fashion_mnist` "
            f"({entry['minutes']} minutes for the whole sweep, measured {entry['measured']}).",
            "",
            *study_table(study, entry["table"], mnist.get(study, {}).get("table")),
            "",
            f"![{study} on Fashion-MNIST](images/study_{study}_fashion.png)",
            "",
        ]
        if study in FASHION_LESSONS:
            lines += [FASHION_LESSONS[study], ""]
    return lines


# --- what the page says, from the results


def short(name: str) -> str:
    """A preset's name in a sentence: default, 784-128-10, ..., fashion_best_cpu."""
    if name == BEST:
        return f"`{BEST}`"
    return name.split(" (")[0].removeprefix("tutorial ").split(" dropout")[0]


def fashion_figures(presets: dict) -> dict[str, tuple[float, float]]:
    """name -> Fashion test accuracy (%), mean and std over the seeds."""
    figures = {}
    for name, entry in presets.items():
        accs = [100 * r["test_acc"] for r in entry["runs"]]
        figures[name] = (statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0)
    return figures


def mnist_figures(presets: dict) -> dict[str, tuple[float, float]]:
    """name -> MNIST test accuracy (%), mean and std, from the cells the table shows."""
    cells = mnist_presets()
    figures = {}
    for name in presets:
        cell = mnist_best() if name == BEST else cells.get(mnist_command(name))
        if cell:
            mean, _, std = cell.partition("±")
            figures[name] = (float(mean), float(std or 0))
    return figures


def best_verdict(presets: dict) -> tuple[str, bool] | None:
    """How fashion_best_cpu compares with the default, and whether it is within the seeds'
    spread (the difference of the means no larger than the larger std)."""
    default = next(iter(TUTORIALS))
    if BEST not in presets or default not in presets:
        return None
    f = fashion_figures(presets)
    (best, best_std), (base, base_std) = f[BEST], f[default]
    diff = best - base
    against = f"the default ({base:.2f} ± {base_std:.2f} %)"
    if abs(diff) <= max(best_std, base_std):
        return f"**no better than {against}** within the spread of the seeds", True
    better = "better" if diff > 0 else "worse"
    return (
        f"**{better} than {against}** by {abs(diff):.2f} points, more than the seeds' spread",
        False,
    )


def time_ratio(presets: dict, name: str, than: str) -> float:
    def mean_time(n: str) -> float:
        return statistics.mean(r["fit_seconds"] for r in presets[n]["runs"])

    return mean_time(name) / mean_time(than)


def mistake_ratios(presets: dict) -> list[float]:
    """Fashion test error / MNIST test error, for the default and the tutorial presets."""
    f, m = fashion_figures(presets), mnist_figures(presets)
    return [(100 - f[n][0]) / (100 - m[n][0]) for n in presets if n != BEST and n in m]


def position(value: float, values: list[float]) -> str:
    ranked = sorted(values)
    if len(ranked) > 2 and ranked.index(value) not in (0, len(ranked) - 1):
        return "between the other seeds'"
    return "the lowest" if value == ranked[0] else "the highest"


def preset_paragraphs(results: dict) -> list[str]:
    """What changes for the presets on the harder data set, every figure from the results."""
    presets = results.get("presets", {})
    default = next(iter(TUTORIALS))
    if default not in presets:
        return []
    f, m = fashion_figures(presets), mnist_figures(presets)
    paragraphs = []
    ratios = mistake_ratios(presets)
    if ratios and default in m:
        text = (
            f"The default and the tutorial presets make {min(ratios):.1f} to {max(ratios):.1f} "
            "times as many mistakes on Fashion-MNIST as on MNIST (the default: "
            f"{100 - f[default][0]:.1f} % test error against {100 - m[default][0]:.2f} %)"
        )
        if BEST in f and BEST in m:
            text += (
                f"; `{BEST}` makes {(100 - f[BEST][0]) / (100 - m[BEST][0]):.1f} times as many "
                f"as `{MNIST_BEST}`, but that row compares two recipes ({CANDIDATE_EPOCHS} epochs "
                "on the clothes as they are against 90 epochs of distorted digits)"
            )
        stds_f = [std for _, std in f.values()]
        stds_m = [std for _, std in m.values()]
        paragraphs.append(
            f"{text}. The seeds spread more: std {min(stds_f):.2f}-{max(stds_f):.2f} points "
            f"against {min(stds_m):.2f}-{max(stds_m):.2f}."
        )
    tutorials = [n for n in presets if n in TUTORIALS and n != default and n in m]
    if len(tutorials) > 1 and default in m:
        gaps_f = [f[default][0] - f[n][0] for n in tutorials]
        gaps_m = [m[default][0] - m[n][0] for n in tutorials]
        lead = "stays first" if min(gaps_f) > 0 and min(gaps_m) > 0 else "is not always first"
        order_m = sorted(tutorials, key=lambda n: -m[n][0])
        order_f = sorted(tutorials, key=lambda n: -f[n][0])
        text = (
            f"The default {lead}: it is {min(gaps_f):.1f}-{max(gaps_f):.1f} points ahead of the "
            f"tutorial networks ({min(gaps_m):.1f}-{max(gaps_m):.1f} on MNIST). "
        )
        if order_f == order_m:
            text += "The tutorial networks keep their order: " + " > ".join(map(short, order_f))
        else:
            text += (
                "The tutorial networks change places: on MNIST "
                + " > ".join(map(short, order_m))
                + ", on Fashion-MNIST "
                + " > ".join(map(short, order_f))
            )
        close = [
            f"{short(a)} and {short(b)}"
            for a, b in itertools.pairwise(order_f)
            if f[a][0] - f[b][0] <= max(f[a][1], f[b][1])
        ]
        if close:
            text += f" ({'; '.join(close)} within a seed's spread of each other on Fashion-MNIST)"
        last, before = order_f[-1], order_f[-2]
        vals = {n: [100 * r["val_acc_best"] for r in presets[n]["runs"]] for n in (last, before)}
        text += (
            f". {short(last)} "
            + (
                "is last on both"
                if order_m[-1] == last
                else f"falls from {['first', 'second', 'third', 'fourth'][order_m.index(last)]} "
                "to last"
            )
            + ": "
            + ("every seed's" if max(vals[last]) < min(vals[before]) else "on average its")
            + f" best validation accuracy is {min(vals[last]):.1f}-{max(vals[last]):.1f} % "
            f"against {min(vals[before]):.1f}-{max(vals[before]):.1f} % for {short(before)}."
        )
        drops = [
            (100 * (r["curve"][-2][1] - r["curve"][-1][1]), r)
            for r in presets[last]["runs"]
            if len(r["curve"]) > 1
        ]
        drop, run = max(drops, key=lambda d: d[0]) if drops else (0.0, None)
        if run and drop > 1:
            tests = [100 * r["test_acc"] for r in presets[last]["runs"]]
            text += (
                f" Its validation accuracy also swings from epoch to epoch: with seed "
                f"{run['seed']} it drops by {drop:.1f} points in the last epoch (the curves "
                "below), but the best-by-validation checkpoint leaves that epoch out, and that "
                f"seed's test accuracy ({100 * run['test_acc']:.2f} %) is "
                f"{position(100 * run['test_acc'], tests)}."
            )
        paragraphs.append(text)
    submitted = (results.get("baselines") or {}).get("submitted_mlps") or []
    verdict = best_verdict(presets)
    text = ""
    references = []  # (test accuracy in %, what it is)
    if AUTHORS_RERUN.is_file() and (rerun := json.loads(AUTHORS_RERUN.read_text())["runs"]):
        top = max(rerun, key=lambda r: r["test_acc"])
        setting = f"{top['setting']['activation']} {top['setting']['hidden_layer_sizes']}"
        references.append(
            (100 * top["test_acc"], f"the best of the authors' MLP grid rerun here ({setting}")
        )
    if len(submitted) == 1:
        references.append(
            (
                100 * submitted[0]["fashion_test_acc"],
                f"the one MLP figure Debian's package carries (a submitted \""
                f'{submitted[0]["classifier"]}"',
            )
        )
    for figure, what in references:
        above = ["the default" if n == default else short(n) for n in presets if f[n][0] > figure]
        if len(above) == len(presets):
            who = "every preset beats"
        elif not above:
            who = "no preset beats"
        else:
            listed = " and ".join([", ".join(above[:-1]), above[-1]] if above[:-1] else above)
            who = f"only {listed} " + ("beats" if len(above) == 1 else "beat")
        text += f"Of the presets, {who} {what}, {figure:.2f} %, below). "
    if verdict:
        words, within = verdict
        gain = f[BEST][0] - f[default][0]
        text += (
            f"`{BEST}`, the best of {len(CANDIDATES)} wide recipes on the validation split, "
            f"reaches {f[BEST][0]:.2f} ± {f[BEST][1]:.2f} %: {words}, in "
            f"{time_ratio(presets, BEST, default):.1f} times the training time "
            f"({statistics.mean(r['fit_seconds'] for r in presets[BEST]['runs']) / 60:.1f} "
            "minutes on average)."
        )
        if BEST in m and default in m:
            text += (
                f" On MNIST the wide network gains {m[BEST][0] - m[default][0]:.2f} points over "
                f"the default, with 90 epochs of distortions (`{MNIST_BEST}`); on Fashion-MNIST "
                f"the distortions tried cost validation accuracy in {CANDIDATE_EPOCHS} epochs "
                f"(below), and without them the wide network gains {gain:+.2f} points"
                + (", within the seeds' spread." if within else ".")
            )
    if text:
        paragraphs.append(text.strip())
    return paragraphs


def study_cell(table: list[str] | None, key: list[str], column: int) -> float | None:
    """The number in `column` of the row whose first cells are `key`, from a study's table."""
    if not table:
        return None
    for row in study_columns(table)[1]:
        if row[: len(key)] == key:
            return float(row[column].split()[0])
    return None


def summary_bullets(results: dict) -> list[str]:
    """What changes on Fashion-MNIST, in a few lines at the top of the page."""
    presets = results.get("presets", {})
    default = next(iter(TUTORIALS))
    f, m = fashion_figures(presets), mnist_figures(presets)
    bullets = []
    ratios = mistake_ratios(presets)
    if default in f and default in m and ratios:
        bullets.append(
            f"Clothes are harder: the default gets {f[default][0]:.2f} % of the test images "
            f"right against {m[default][0]:.2f} % of MNIST's digits; it and the tutorial "
            f"presets make {min(ratios):.1f} to {max(ratios):.1f} times as many mistakes."
        )
    verdict = best_verdict(presets)
    if verdict:
        bullets.append(
            f"`{BEST}` (784-1024-1024-10, {CANDIDATE_EPOCHS} epochs) reaches "
            f"{f[BEST][0]:.2f} %: {verdict[0]}, in "
            f"{time_ratio(presets, BEST, default):.1f} times the training time."
        )
    candidates = (results.get("candidates") or {}).get("runs")
    if candidates:
        plain = next(iter(CANDIDATES))
        if (
            plain in candidates
            and max(candidates, key=lambda n: candidates[n]["val_acc_best"]) == plain
        ):
            costs = [
                100 * (candidates[plain]["val_acc_best"] - r["val_acc_best"])
                for n, r in candidates.items()
                if n != plain
            ]
            bullets.append(
                f"Distortions did not help in {CANDIDATE_EPOCHS} epochs: shifting or mildly "
                f"rotating, scaling and shearing the training clothes cost {min(costs):.1f}-"
                f"{max(costs):.1f} points of validation accuracy (one run each), so `{BEST}` "
                "trains on the images as they are."
            )
    fashion, mnist = study_results()
    table = {
        name: (fashion.get(name, {}).get("table"), mnist.get(name, {}).get("table"))
        for name in ("regularization", "activation")
    }
    gaps = [
        (study_cell(t, ["0.0", "0.0"], 2) or 0) - (study_cell(t, ["0.0", "0.0"], 3) or 0)
        for t in table["regularization"]
    ]
    gelu = [study_cell(t, ["gelu"], -1) for t in table["activation"]]
    if all(gaps) and None not in gelu:
        bullets.append(
            "The studies (one run per job: about half a point is noise) mostly tell MNIST's "
            "lessons again, lower. Two differences are clear: 1 000 clothes overfit more (a "
            f"gap of {gaps[0]:.0f} points between training and validation accuracy, against "
            f"{gaps[1]:.0f} on MNIST), and GELU learns in the deep, narrow MLP on clothes "
            f"({gelu[0]:.1f} %) where it fails on digits ({gelu[1]:.1f} %)."
        )
    return [f"- {b}" for b in bullets]


# The figures the hand-written readings on the page (CANDIDATE_LESSON, FASHION_LESSONS) were
# written from: the candidates, and both data sets' study tables (the presets' sentences are
# computed from the results). write_page refuses to write the page once the results no
# longer hold them.
WRITTEN_FROM: dict = {
    "candidates": {
        "no augmentation, 25 epochs": "90.10 / 90.29",
        "translate ±2 px, 25 epochs": "88.28 / 87.81",
        "mild affine (rotation 5°, scale 5 %, shear 5°, shift 2 px), 25 epochs": "88.24 / 87.73",
    },
    "studies fashion": {
        "regularization": [
            "| 0.0 | 0.0 | 100.0 % | 82.18 % | 81.48 % |",
            "| 0.0 | 0.1 | 100.0 % | 82.32 % | 81.42 % |",
            "| 0.0 | 1.0 | 100.0 % | 82.28 % | 81.60 % |",
            "| 0.3 | 0.0 | 99.7 % | 82.92 % | 82.10 % |",
            "| 0.3 | 0.1 | 99.9 % | 82.58 % | 81.98 % |",
            "| 0.3 | 1.0 | 99.5 % | 82.56 % | 82.11 % |",
            "| 0.6 | 0.0 | 96.4 % | 82.52 % | 81.98 % |",
            "| 0.6 | 0.1 | 96.3 % | 82.94 % | 81.97 % |",
            "| 0.6 | 1.0 | 97.0 % | 82.78 % | 81.79 % |",
        ],
        "activation": [
            "| sigmoid | 3.6e-06 | 10.28 % |",
            "| tanh | 1.4 | 81.50 % |",
            "| relu | 2.1 | 81.30 % |",
            "| leaky_relu | 3.3 | 81.42 % |",
            "| gelu | 1.5 | 74.80 % |",
        ],
        "batch_size": [
            "| 1 | 50000 | 86 s | 84.24 % | 83.37 % |",
            "| 64 | 785 | 3 s | 84.56 % | 84.51 % |",
            "| 10000 | 5 | 1 s | 65.56 % | 66.26 % |",
        ],
        "l1_vs_l2": [
            "| 0.0 | 0.0 | 5.4 % | 89.18 % |",
            "| 0.0 | 0.001 | 7.2 % | 88.66 % |",
            "| 2e-05 | 0.0 | 22.3 % | 89.02 % |",
            "| 2e-05 | 0.001 | 23.6 % | 88.52 % |",
        ],
    },
    "studies mnist": {
        "regularization": [
            "| 0.0 | 0.0 | 100.0 % | 88.68 % | 90.20 % |",
            "| 0.0 | 0.1 | 100.0 % | 89.16 % | 90.44 % |",
            "| 0.0 | 1.0 | 100.0 % | 88.74 % | 90.65 % |",
            "| 0.3 | 0.0 | 100.0 % | 89.54 % | 90.87 % |",
            "| 0.3 | 0.1 | 100.0 % | 89.16 % | 90.46 % |",
            "| 0.3 | 1.0 | 100.0 % | 89.26 % | 90.77 % |",
            "| 0.6 | 0.0 | 99.6 % | 90.10 % | 91.62 % |",
            "| 0.6 | 0.1 | 100.0 % | 89.78 % | 91.62 % |",
            "| 0.6 | 1.0 | 100.0 % | 89.92 % | 91.43 % |",
        ],
        "activation": [
            "| sigmoid | 3e-06 | 10.42 % |",
            "| tanh | 6.2 | 94.46 % |",
            "| relu | 3.3 | 94.40 % |",
            "| leaky_relu | 9.2 | 94.86 % |",
            "| gelu | 0.022 | 11.08 % |",
        ],
        "batch_size": [
            "| 1 | 50000 | 57 s | 94.02 % | 94.46 % |",
            "| 64 | 785 | 1 s | 93.68 % | 94.68 % |",
            "| 10000 | 5 | 1 s | 68.78 % | 70.87 % |",
        ],
        "l1_vs_l2": [
            "| 0.0 | 0.0 | 6.9 % | 97.84 % |",
            "| 0.0 | 0.001 | 15.6 % | 97.68 % |",
            "| 2e-05 | 0.0 | 33.8 % | 97.84 % |",
            "| 2e-05 | 0.001 | 33.7 % | 97.46 % |",
        ],
    },
}


def written_from(results: dict) -> dict:
    """The figures WRITTEN_FROM records, as `results` and the studies' JSON files hold them."""
    figures: dict = {}
    if results.get("candidates"):
        figures["candidates"] = {
            name: f"{100 * r['val_acc_best']:.2f} / {100 * r['test_acc']:.2f}"
            for name, r in results["candidates"]["runs"].items()
        }
    for data, measured in zip(("fashion", "mnist"), study_results(), strict=True):
        for study, entry in measured.items():
            if study in FASHION_LESSONS:
                figures.setdefault(f"studies {data}", {})[study] = entry["table"][2:]
    return figures


def check_written_from(results: dict) -> None:
    """Refuse to write the page when the figures have changed under its hand-written text."""
    now = written_from(results)
    changed = [
        f"{section} {key}: {WRITTEN_FROM.get(section, {}).get(key)} -> {value}"
        for section, figures in now.items()
        for key, value in figures.items()
        if WRITTEN_FROM.get(section, {}).get(key) != value
    ]
    if changed:
        raise RuntimeError(
            "The results no longer match the figures the page's hand-written lessons were "
            "written from (benchmarks/fashion.py WRITTEN_FROM): "
            + "; ".join(changed[:5])
            + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
            + ". The results are saved (docs/fashion.json, docs/studies*.json); re-read the "
            "new tables, rewrite CANDIDATE_LESSON and FASHION_LESSONS in benchmarks/fashion.py "
            "to match them, then update WRITTEN_FROM (`fashion.written_from(fashion.load())`)."
        )


def slowest_run(presets: dict) -> str:
    """The run that took longest against its preset's other seeds, as an example, if it took
    a third longer than their slowest."""
    worst = (1.0, "")
    for name, entry in presets.items():
        times = sorted(r["fit_seconds"] for r in entry["runs"])
        if len(times) > 1 and times[-1] / times[-2] > worst[0]:
            worst = (
                times[-1] / times[-2],
                f": one {short(name)} seed took {times[-1]:.1f} s against "
                f"{times[0]:.1f}-{times[-2]:.1f} s",
            )
    return worst[1] if worst[0] > 4 / 3 else ""


def markdown(results: dict) -> str:
    presets = results.get("presets", {})
    machines = sorted({e["machine"] for e in presets.values()})
    measured = sorted({e["measured"] for e in presets.values()})
    seeds = sorted({len(e["runs"]) for e in presets.values()})
    seed_ids = sorted({r["seed"] for e in presets.values() for r in e["runs"]})
    seed_list = ", ".join(map(str, seed_ids)) or "0, 1, 2"
    bullets = summary_bullets(results)
    lines = [
        "# Fashion-MNIST: the presets and the studies on the harder data set",
        "",
        "`data=fashion_mnist` trains on Zalando's Fashion-MNIST instead of MNIST: the same "
        "28×28 greyscale format and split, ten kinds of clothes and shoes instead of digits "
        "([data.md](data.md)). Plain MLPs only.",
        "",
        *(["What changes on Fashion-MNIST:", "", *bullets, ""] if bullets else []),
        "Test accuracy is the mean ± std over seeds "
        f"{seed_list} of the best-by-validation checkpoint on the official 10 000 test images "
        "(the model is chosen on a 5 000-image validation split); training time is "
        "`fit_seconds` from metrics.json (training and the validation after each epoch).",
        "",
        "## The presets on both data sets",
        "",
        "| preset | Fashion test accuracy (%) | Fashion training time (s) | command | "
        "MNIST test accuracy (%) | MNIST command |",
        "| --- | --- | --- | --- | --- | --- |",
        *preset_rows(presets),
        "",
        "The MNIST column is [presets.md](presets.md)'s (the default and the tutorials) and "
        f"[accuracy.md](accuracy.md)'s (`{MNIST_BEST}`, MNIST's own best_cpu-style preset: "
        "90 epochs of affine and elastic distortions, a different recipe from "
        f"`{BEST}`'s), each measured over seeds 0, 1, 2 on the same kind of machine.",
        "",
    ]
    for paragraph in preset_paragraphs(results):
        lines += [paragraph, ""]
    if presets:
        lines += [
            "![validation accuracy against epoch](images/fashion_curves.png)",
            "",
            f"Measured: {', '.join(measured)} ({', '.join(map(str, seeds))} seeds). "
            f"Machine: {'; '.join(machines)}. Other light jobs ran on the machine at times "
            "while the presets trained (whether a run shared it was not recorded), so a "
            f"training time may be inflated{slowest_run(presets)}. Made by "
            "`.venv/bin/python -m benchmarks fashion` "
            f"(`--seeds {max(seeds)}`); the raw figures and curves are in `docs/fashion.json`.",
            "",
        ]
    lines += [
        "## The authors' MLP baselines (scikit-learn MLPClassifier)",
        "",
        *baseline_lines(results.get("baselines")),
        *candidate_lines(results.get("candidates")),
        *studies_lines(),
    ]
    return "\n".join(lines)


def write_page(results: dict | None = None) -> None:
    results = results if results is not None else load()
    check_written_from(results)
    if results.get("presets"):
        draw_curves(results["presets"], CURVES)
    PAGE.write_text(markdown(results))
    print(f"wrote {PAGE}")


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def save(results: dict) -> None:
    RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--presets",
        default=",".join(label_key(n) for n in PRESETS),
        help="the presets to (re)measure, by short name: default, tutorial_mlp_128, ..., "
        f'{BEST}; "" for none',
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--candidates", action="store_true", help=f"re-run {BEST}'s candidates")
    parser.add_argument(
        "--baselines", action="store_true", help="fetch the authors' baselines again"
    )


def label_key(name: str) -> str:
    """A preset's short name on the command line: default, tutorial_mlp_128, fashion_best_cpu."""
    if name == BEST:
        return BEST
    overrides = TUTORIALS[name]
    return overrides[0].removeprefix("experiment=") if overrides else "default"


def main(args: argparse.Namespace) -> None:
    results = load()
    if args.baselines or ("baselines" not in results and args.presets):
        results["baselines"] = fetch_baselines()
        save(results)
    if args.candidates:
        results["candidates"] = choose_best()
        save(results)
    wanted = [p for p in args.presets.split(",") if p]
    by_key = {label_key(n): n for n in PRESETS}
    unknown = [p for p in wanted if p not in by_key]
    if unknown:
        raise SystemExit(f"unknown presets {unknown}; known: {', '.join(by_key)}")
    presets = results.setdefault("presets", {})
    for key in wanted:
        name = by_key[key]
        presets[name] = with_seeds(PRESETS[name], args.seeds)
        results["presets"] = {n: presets[n] for n in PRESETS if n in presets}  # page order
        presets = results["presets"]
        save(results)
    write_page(results)

"""`python -m benchmarks fashion`'s page and its reading of the authors' baselines, on small
fake results and a fake package: no training, no network."""

import copy
import gzip
import json
import re
from pathlib import Path

import pytest
from hydra import compose

from benchmarks import fashion, studies
from benchmarks.common import ROOT
from mnist_lightning.errors import DataError
from tests.test_fashion_mnist import fake_deb

GRID = {
    "common": {},
    "classifiers": {
        "SVC": [{"C": [1.0, 10.0]}],
        "MLPClassifier": [
            {"activation": ["tanh", "relu"], "hidden_layer_sizes": ["(10,)", "(100,)"]},
            {"alpha": [0.1]},
        ],
    },
}
README = """## Benchmark
| Classifier | Preprocessing | Fashion test accuracy | MNIST test accuracy | Submitter| Code |
| --- | --- | --- | --- | --- |--- |
|2 Conv+pooling | None | 0.876 | - | [Kashif Rasul](https://twitter.com/krasul) | [:link:](x) |
|MLP 256-128-100| None | 0.8833| - | [@heitorrapela](https://github.com/heitorrapela)| [:link:](y)|
|MLPish net| None | 0.5| 0.9 | someone | - |
|MLP 10 | Normalization | 0.85 | 0.97 | [@b](https://github.com/b) | - |
"""


def test_the_mlp_grid_is_expanded_as_the_authors_runner_does() -> None:
    assert fashion.mlp_grid(GRID) == [
        {"activation": "tanh", "hidden_layer_sizes": "(10,)", "alpha": 0.1},
        {"activation": "tanh", "hidden_layer_sizes": "(100,)", "alpha": 0.1},
        {"activation": "relu", "hidden_layer_sizes": "(10,)", "alpha": 0.1},
        {"activation": "relu", "hidden_layer_sizes": "(100,)", "alpha": 0.1},
    ]
    with pytest.raises(DataError, match="no MLPClassifier entry"):
        fashion.mlp_grid({"classifiers": {"SVC": []}})


def test_the_readmes_submitted_mlps_are_read_with_their_figures() -> None:
    assert fashion.submitted_mlps(README) == [
        {
            "classifier": "MLP 256-128-100",
            "preprocessing": "None",
            "fashion_test_acc": 0.8833,
            "mnist_test_acc": None,
            "submitter": "@heitorrapela",
        },
        {
            "classifier": "MLP 10",
            "preprocessing": "Normalization",
            "fashion_test_acc": 0.85,
            "mnist_test_acc": 0.97,
            "submitter": "@b",
        },
    ]


def package(baselines: bytes, readme: bytes = README.encode()) -> dict[str, bytes | None]:
    doc = fashion.DOC_FOLDER
    return {
        "usr": None,
        doc: None,
        f"{doc}/benchmark": None,
        fashion.BASELINES_MEMBER: baselines,
        fashion.README_MEMBER: gzip.compress(readme),
    }


def test_the_baselines_are_read_from_the_package(tmp_path: Path) -> None:
    deb = fake_deb(
        tmp_path / "dataset-fashion-mnist_0-1_all.deb", package(json.dumps(GRID).encode())
    )
    got = fashion.read_baselines(deb)
    assert got["package"] == deb.name
    assert got["member"] == "usr/share/doc/dataset-fashion-mnist/benchmark/baselines.json"
    assert len(got["mlp_grid"]) == 4 and len(got["submitted_mlps"]) == 2


def test_a_package_without_baselines_or_with_a_huge_one_is_refused(tmp_path: Path) -> None:
    entries = package(b"{}")
    del entries[fashion.BASELINES_MEMBER]
    with pytest.raises(DataError, match=r"holds no \S*/baselines\.json"):
        fashion.read_baselines(fake_deb(tmp_path / "a.deb", entries))
    huge = package(b" " * (fashion.MAX_MEMBER_BYTES + 1))
    with pytest.raises(DataError, match="too large"):
        fashion.read_baselines(fake_deb(tmp_path / "b.deb", huge))


def runs(*accs: float, epochs: int = 3) -> dict:
    return {
        "measured": "2026-11-30",
        "machine": "a test machine, 2 cores, no GPU",
        "runs": [
            {
                "seed": seed,
                "test_acc": acc,
                "val_acc_best": acc,
                "fit_seconds": 10.0 + seed,
                "epochs": epochs,
                "curve": [(i + 1.0, acc - 0.01 * (epochs - i)) for i in range(epochs)],
            }
            for seed, acc in enumerate(accs)
        ],
    }


def test_the_page_shows_both_data_sets_the_baselines_and_the_studies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default, tutorial = list(fashion.TUTORIALS)[:2]
    (tmp_path / "presets.md").write_text(
        "| preset | test accuracy (%) | training time (s) | command |\n| --- | --- | --- | --- |\n"
        f"| {default} | 98.65 ± 0.04 | 34.70 ± 2.71 | `mnist-train` |\n"
        f"| {tutorial} | 97.49 ± 0.09 | 6.78 ± 0.85 | `mnist-train experiment=tutorial_mlp_128` |\n"
    )
    (tmp_path / "accuracy.json").write_text(json.dumps({"best_cpu": runs(0.992, 0.994)}))
    table = [
        "| batch | optimizer steps | training time | val/acc_best | test/acc |",
        "| --- | --- | --- | --- | --- |",
        "| 1 | 50000 | 57 s | 9{}.00 % | 9{}.10 % |",
        "| 64 | 785 | 1 s | 9{}.50 % | 9{}.60 % |",
    ]
    studied = {"measured": "2026-11-30", "minutes": 1.0}
    (tmp_path / "studies.json").write_text(
        json.dumps({"batch_size": studied | {"table": [r.replace("{}", "7") for r in table]}})
    )
    (tmp_path / "studies_fashion.json").write_text(
        json.dumps({"batch_size": studied | {"table": [r.replace("{}", "") for r in table]}})
    )
    monkeypatch.setattr(fashion, "MNIST_PRESETS_PAGE", tmp_path / "presets.md")
    monkeypatch.setattr(fashion, "MNIST_ACCURACY", tmp_path / "accuracy.json")
    monkeypatch.setattr(studies, "RESULTS", tmp_path / "studies.json")
    monkeypatch.setattr(studies, "FASHION_RESULTS", tmp_path / "studies_fashion.json")
    monkeypatch.setattr(fashion, "PAGE", tmp_path / "fashion.md")
    monkeypatch.setattr(fashion, "CURVES", tmp_path / "fashion_curves.png")
    rerun = {"measured": "2026-11-30", "machine": "m", "command": "c", "runs": []}
    for acc, layers in ((0.88, "(100,)"), (0.84, "(10,)")):
        setting = {"activation": "relu", "hidden_layer_sizes": layers}
        rerun["runs"].append({"setting": setting, "test_acc": acc, "passes": 9, "seconds": 1.0})
    (tmp_path / "fashion_authors.json").write_text(json.dumps(rerun))
    monkeypatch.setattr(fashion, "AUTHORS_RERUN", tmp_path / "fashion_authors.json")
    results = {
        "presets": {
            default: runs(0.89, 0.90, 0.91, epochs=12),
            tutorial: runs(0.87, 0.88, 0.86),
            fashion.BEST: runs(0.915, 0.917, 0.913, epochs=40),
        },
        "baselines": {
            "package": "dataset-fashion-mnist_0-1_all.deb",
            "member": fashion.BASELINES_MEMBER,
            "mlp_grid": fashion.mlp_grid(GRID),
            "readme_member": fashion.README_MEMBER,
            "submitted_mlps": fashion.submitted_mlps(README),
        },
        "candidates": {
            "measured": "2026-11-30",
            "machine": "m",
            "runs": {
                name: {"val_acc_best": 0.9 + i / 100, "test_acc": 0.89, "fit_seconds": 300.0}
                for i, name in enumerate(fashion.CANDIDATES)
            },
        },
    }
    monkeypatch.setattr(fashion, "WRITTEN_FROM", fashion.written_from(results))
    fashion.write_page(results)
    page = (tmp_path / "fashion.md").read_text()
    assert (tmp_path / "fashion_curves.png").stat().st_size > 0
    # each preset: Fashion mean ± std, its command, MNIST's figure and command beside it
    assert (
        "| 784-128-10 (Adam, batch 64, 5 epochs) | 87.00 ± 1.00 | 11 ± 1 | "
        "`mnist-train data=fashion_mnist experiment=tutorial_mlp_128` | 97.49 ± 0.09 | "
        "`mnist-train experiment=tutorial_mlp_128` |"
    ) in page
    assert "| 90.00 ± 1.00 | 11 ± 1 | `mnist-train data=fashion_mnist` | 98.65 ± 0.04 |" in page
    assert "`mnist-train experiment=fashion_best_cpu` | 99.30 ± 0.14 |" in page
    assert "Machine: a test machine, 2 cores, no GPU" in page
    # the baselines: the grid as read, and the README's submitted MLP rows with their figures
    assert (
        "the 4 combinations of activation ∈ {tanh, relu} × hidden_layer_sizes ∈ {(10,), (100,)} "
        "× alpha ∈ {0.1}, everything else"
    ) in page
    assert "not their results" in page
    assert "| MLP 256-128-100 | None | 88.33 % | – | @heitorrapela |" in page
    # the authors' grid rerun: the presets above its best, and its table best first
    assert (
        "Of the presets, only the default and `fashion_best_cpu` beat the best of the authors' "
        "MLP grid rerun here (relu (100,), 88.00 %, below)"
    ) in page
    assert "2 of its 4 settings" in page and "| relu | (100,) | 88.00 % | 9 | 1 s |" in page
    # the candidates: the best by validation accuracy is the preset
    last = list(fashion.CANDIDATES)[-1]
    assert f"| {last} (= `fashion_best_cpu`) | 92.00 % | 89.00 % | 300 s |" in page
    # the studies: Fashion's table with MNIST's figures beside each row
    assert (
        "| batch | Fashion optimizer steps | Fashion training time | Fashion val/acc_best | "
        "Fashion test/acc | MNIST val/acc_best | MNIST test/acc |"
    ) in page
    assert "| 64 | 785 | 1 s | 9.50 % | 9.60 % | 97.50 % | 97.60 % |" in page
    assert "images/study_batch_size_fashion.png" in page
    # the verdict is the results': here fashion_best_cpu beats the default beyond the spread
    assert "no better than the default" not in page
    assert "**better than the default (90.00 ± 1.00 %)** by 1.50 points" in page
    assert "reaches 91.50 ± 0.20 %" in page
    # a changed figure under the hand-written lessons: the page is not written
    changed = copy.deepcopy(results)
    changed["candidates"]["runs"][last]["val_acc_best"] = 0.95
    with pytest.raises(RuntimeError, match="re-read the new tables, rewrite"):
        fashion.write_page(changed)


def test_the_hand_written_lessons_match_the_measured_figures() -> None:
    """docs/fashion.json and docs/studies*.json hold the figures the lessons were written
    from; change one and the page writer refuses."""
    results = fashion.load()
    fashion.check_written_from(results)
    if not results.get("candidates"):
        pytest.skip("docs/fashion.json has no candidates yet")
    changed = copy.deepcopy(results)
    name = next(iter(changed["candidates"]["runs"]))
    changed["candidates"]["runs"][name]["test_acc"] += 0.01
    with pytest.raises(RuntimeError, match=f"candidates {re.escape(name)}"):
        fashion.check_written_from(changed)


def test_readme_and_the_preset_quote_the_measured_means() -> None:
    """README's table and fashion_best_cpu.yaml's comment quote docs/fashion.json's means."""
    presets = fashion.load().get("presets")
    if not presets:
        pytest.skip("docs/fashion.json has no presets yet")
    means = {name: f"{mean:.2f}" for name, (mean, _) in fashion.fashion_figures(presets).items()}
    readme = (ROOT / "README.md").read_text()
    for name, mean in means.items():
        assert f"| {mean} % |" in readme, name
    comment = (ROOT / "conf" / "experiment" / f"{fashion.BEST}.yaml").read_text()
    default = next(iter(fashion.TUTORIALS))
    assert f"({means[fashion.BEST]} against {means[default]} %" in comment
    if fashion.AUTHORS_RERUN.is_file():  # and the best of the authors' grid rerun here
        rerun = json.loads(fashion.AUTHORS_RERUN.read_text())["runs"]
        best = max(r["test_acc"] for r in rerun)
        assert f"its best reads {100 * best:.2f} %" in readme


@pytest.mark.usefixtures("hydra_on_conf")
def test_the_preset_is_the_candidate_the_page_says_was_chosen() -> None:
    """conf/experiment/fashion_best_cpu.yaml composes to the same data, model and trainer as
    the candidate with the best val/acc_best in docs/fashion.json."""
    measured = fashion.load().get("candidates")
    if not measured:
        pytest.skip("docs/fashion.json has no candidates yet")
    best = max(measured["runs"], key=lambda name: measured["runs"][name]["val_acc_best"])
    preset = compose("train", overrides=[f"experiment={fashion.BEST}"])
    candidate = compose("train", overrides=fashion.CANDIDATES[best])
    for group in ("data", "model", "trainer"):
        assert preset[group] == candidate[group], group

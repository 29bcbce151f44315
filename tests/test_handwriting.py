"""Photographed handwriting (benchmarks/handwriting.py, docs/handwriting.md): the set's pictures
are made deterministically, every kind of them is prepared back into the MNIST digit it came
from, and paper with no ink on it, however lit, is still refused as blank."""

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.handwriting import GLYPHS, KINDS, mnist_ink, per_kind, photograph, vector_ink
from mnist_lightning.data.images import ImageError, prepare


def mnist_like(digit: int, seed: int) -> np.ndarray:
    """A 28x28 uint8 digit as MNIST has it (bright on black, in a 20x20 box, centred): a
    vector glyph, shrunk. The tests need no MNIST files."""
    ink = vector_ink(digit, np.random.default_rng(seed), pen=0.12)
    rows, cols = np.nonzero(ink > 0.5)
    crop = Image.fromarray(ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] * 255)
    scale = 20 / max(crop.size)
    small = crop.convert("L").resize(
        (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
        Image.Resampling.LANCZOS,
    )
    field = Image.new("L", (28, 28), 0)
    field.paste(small, ((28 - small.width) // 2, (28 - small.height) // 2))
    return np.asarray(field)


def picture(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_the_same_seed_makes_the_same_pictures() -> None:
    digit = mnist_like(3, 0)
    made = [
        photograph(mnist_ink(digit, 0.1), KINDS["photo"][0], np.random.default_rng(7))
        for _ in range(2)
    ]
    assert made[0] == made[1]
    other = photograph(mnist_ink(digit, 0.1), KINDS["photo"][0], np.random.default_rng(8))
    assert other != made[0]
    assert vector_ink(4, np.random.default_rng(1), 0.1).tobytes() == (
        vector_ink(4, np.random.default_rng(1), 0.1).tobytes()
    )


@pytest.mark.parametrize(
    "kind",
    # photo's pictures are up to 1000 px: a few seconds
    [pytest.param(k, marks=pytest.mark.slow) if k == "photo" else k for k in KINDS],
)
def test_each_kind_is_prepared_back_into_its_digit(kind: str) -> None:
    """Without rotation, `prepare` turns the photo of a re-rendered digit into an image close
    to the digit itself, whatever the paper, light, pen, size, margins, noise or JPEG."""
    look = replace(KINDS[kind][0], rotation=0.0)
    scores = []
    for seed in range(4):
        digit = mnist_like(seed + 2, seed)
        rng = np.random.default_rng([seed, 99])
        data, suffix = photograph(mnist_ink(digit, rng.uniform(*look.pen)), look, rng)
        image = picture(data)
        assert suffix == (".jpg" if look.jpeg else ".png")
        assert look.side[0] <= max(image.size) <= 1.25 * look.side[1]
        prepared = prepare(image, "photo").numpy()
        scores.append(correlation(prepared, prepare(Image.fromarray(digit)).numpy()))
    assert min(scores) > 0.75, scores
    assert np.mean(scores) > 0.85, scores


def test_every_digit_has_drawn_styles() -> None:
    assert sorted(GLYPHS) == list(range(10))
    for digit, styles in GLYPHS.items():
        assert len(styles) >= 2, digit
        ink = vector_ink(digit, np.random.default_rng(digit), 0.1)
        assert 0.02 < ink.mean() < 0.3


def lit_paper(kind: str, size: tuple[int, int] = (300, 200)) -> Image.Image:
    """Paper with no ink: uniform, under a gradient, vignetted, shadowed, noisy or JPEG'd."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(size)
    tone = {
        "white": np.full((h, w), 250.0),
        "grey": np.full((h, w), 150.0),
        "black": np.zeros((h, w)),
        "gradient": 120 + 120 * x,
        "vignette": 240 - 200 * ((x - 0.5) ** 2 + (y - 0.35) ** 2),
        "shadow": 235 - 60 / (1 + np.exp(-(x - 0.6) / 0.05)),
        "noisy": 220 + np.random.default_rng(0).normal(0, 6, (h, w)),
    }[kind.removesuffix(" jpeg")]
    image = Image.fromarray(np.clip(tone, 0, 255).astype(np.uint8))
    if kind.endswith("jpeg"):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=20)
        image = picture(buffer.getvalue())
    return image


@pytest.mark.parametrize(
    "kind", ["white", "grey", "black", "gradient", "vignette", "shadow", "noisy", "noisy jpeg"]
)
def test_paper_without_ink_is_blank(kind: str) -> None:
    with pytest.raises(ImageError, match=r"^paper\.jpg: the image is blank"):
        prepare(lit_paper(kind), "paper.jpg")


def test_a_faint_small_digit_on_shadowed_paper_is_found() -> None:
    """The converse: the same paper with a small pencil digit far from the middle is read."""
    paper = np.asarray(lit_paper("shadow"), np.float32)
    digit = np.asarray(Image.fromarray(mnist_like(7, 1)).resize((40, 40)), np.float32) / 255
    paper[20:60, 30:70] *= 1 - 0.5 * digit
    prepared = prepare(Image.fromarray(paper.astype(np.uint8)), "pencil.png").numpy()
    assert correlation(prepared, prepare(Image.fromarray(mnist_like(7, 1))).numpy()) > 0.8


def test_per_kind_counts_refused_pictures_as_wrong() -> None:
    manifest = [{"kind": "a", "digit": 1}, {"kind": "a", "digit": 2}, {"kind": "b", "digit": 3}]
    assert per_kind(manifest, [1, None, 3]) == {"a": (1, 2), "b": (1, 1), "all": (2, 3)}


def test_the_recipes_tried_are_shown_best_first_and_the_others_gap_is_computed(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import handwriting

    kinds = {"scan": 0.9, "marker": 0.8, "repo": 1.0}
    a = {"trainer.max_epochs": 90, "data.max_stroke": 1.0, "seed": 42}
    b = {"trainer.max_epochs": 30, "data.max_stroke": 1.0, "seed": 42}
    found = {
        "measured": "2026-11-30",
        "machine": "M",
        "seeds": [1, 3],
        "pictures": 2408,
        "runs": [
            {"command": "mnist-train b", "settings": b, "accuracy": kinds | {"all": 0.970}},
            {"command": "mnist-train a", "settings": a, "accuracy": kinds | {"all": 0.978}},
            {"command": "c", "settings": a | {"seed": 43}, "accuracy": kinds | {"all": 0.975}},
        ],
    }
    monkeypatch.setattr(handwriting, "CANDIDATES", tmp_path / "candidates.json")
    assert handwriting.candidates_section() == "" and handwriting.tried_note() == ""
    handwriting.CANDIDATES.write_text(json.dumps(found))
    section = handwriting.candidates_section()
    # only the settings in which the recipes differ, as each run saved them; best first
    first = section.index("| trainer.max_epochs=90 seed=42 | 97.8 % |")
    assert first < section.index("| trainer.max_epochs=90 seed=43 | 97.5 % |")
    assert first < section.index("| trainer.max_epochs=30 seed=42 | 97.0 % |")
    assert "| recipe | development sets | scan | marker |" in section  # repo is not a kind shown
    assert "(seeds 1, 3: 2408 pictures;" in section and "0.04 % of them" in section
    assert "two seeds of one recipe differ by up to 0.3 points" in section  # a's seeds 42, 43
    unknown = {"settings": {}, "accuracy": {"all": 0.95}}  # no saved config: not one recipe
    assert handwriting.seed_gap([unknown, unknown | {"accuracy": {"all": 0.97}}]) is None
    assert "The 2 other recipes tried read less" in handwriting.tried_note()
    assert "the closest by 0.3 points" in handwriting.tried_note()


def test_the_preset_is_described_from_its_own_runs_config(tmp_path: Path) -> None:
    """The page says how the measured checkpoint was trained, not what conf/ says now."""
    from benchmarks import handwriting

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "data: {augment: elastic, max_rotation: 15.0, max_scale: 0.15, elastic_sigma: 6.0,"
        " elastic_alpha: 36.0, max_stroke: 1.0}\n"
        "model: {hidden_dims: [1024, 1024], dropout: 0.2, label_smoothing: 0.1}\n"
        "trainer: {max_epochs: 90}\n"
    )
    said = handwriting.recipe(run / "checkpoints" / "best.ckpt")
    assert said.startswith("784-1024-1024-10, dropout 0.2, label smoothing 0.1, trained 90 epochs")
    assert "elastic σ 6 px and α 36 px; strokes up to 1 px thicker or thinner)" in said
    assert handwriting.recipe(tmp_path / "elsewhere" / "x" / "y.ckpt").startswith("see ")
    saved = handwriting.settings(run / "checkpoints" / "best.ckpt")
    assert saved["trainer.max_epochs"] == 90 and saved["model.hidden_dims"] == [1024, 1024]
    assert saved["model.input_dropout"] is None  # a key an older run's config lacks


def test_the_page_says_whether_the_measured_preset_is_todays_preset(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from benchmarks import handwriting

    with initialize_config_dir(str(handwriting.ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=handwriting", "data.source=files"])
    saved = tmp_path / "run" / ".hydra" / "config.yaml"
    saved.parent.mkdir(parents=True)
    OmegaConf.save(cfg, saved)  # data.source differs: where the data came from, not what trains
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert handwriting.same_as_preset(ckpt).startswith(" — the same settings")
    cfg.trainer.max_epochs = 30
    OmegaConf.save(cfg, saved)
    assert handwriting.same_as_preset(ckpt).startswith(" — not the settings")

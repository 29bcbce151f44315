"""Photographed handwriting (benchmarks/handwriting.py, docs/studies.md): every kind of picture
is made from its seed and prepared back into its digit; paper without ink, however lit, is blank."""

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from benchmarks.handwriting import KINDS, mnist_ink, per_kind, photograph, vector_ink
from mnist_lightning.data.images import ImageError, prepare
from tests.helpers.tiers import one_of_each_kind


@pytest.mark.parametrize("kind", one_of_each_kind(KINDS))  # all together: seconds
def test_each_kind_is_made_from_its_seed_and_prepared_back_into_its_digit(kind: str) -> None:
    """Without rotation, whatever the paper, light, pen, size, margins, noise or JPEG."""
    look = replace(KINDS[kind][0], rotation=0.0)

    def take(seed: int) -> tuple[np.ndarray, bytes, str]:
        ink = vector_ink(seed + 2, np.random.default_rng(seed), pen=0.12)  # a digit as MNIST has it
        digit = (prepare(Image.fromarray(np.uint8(ink * 255))).numpy() * 255).astype(np.uint8)
        rng = np.random.default_rng([seed, 99])
        return digit, *photograph(mnist_ink(digit, rng.uniform(*look.pen)), look, rng)

    made, scores = [], []
    for seed in range(2):
        digit, data, suffix = take(seed)
        made.append(data)
        image = Image.open(io.BytesIO(data))
        assert suffix == (".jpg" if look.jpeg else ".png")
        assert look.side[0] <= max(image.size) <= 1.25 * look.side[1]
        prepared = prepare(image, "photo").numpy()
        expected = prepare(Image.fromarray(digit)).numpy()
        scores.append(np.corrcoef(prepared.ravel(), expected.ravel())[0, 1])
    assert take(0)[1] == made[0] != made[1]
    assert min(scores) > 0.75, scores
    assert np.mean(scores) > 0.85, scores


@pytest.mark.parametrize(
    "kind", ["white", "grey", "black", "gradient", "vignette", "shadow", "noisy", "noisy jpeg"]
)
def test_paper_without_ink_is_blank(kind: str) -> None:
    h, w = 200, 300
    y, x = np.mgrid[0:h, 0:w] / w
    tone = {
        "white": np.full((h, w), 250.0),
        "grey": np.full((h, w), 150.0),
        "black": np.zeros((h, w)),
        "gradient": 120 + 120 * x,
        "vignette": 240 - 200 * ((x - 0.5) ** 2 + (y - 0.35) ** 2),
        "shadow": 235 - 60 / (1 + np.exp(-(x - 0.6) / 0.05)),
        "noisy": 220 + np.random.default_rng(0).normal(0, 6, (h, w)),
    }[kind.removesuffix(" jpeg")]
    paper = Image.fromarray(np.clip(tone, 0, 255).astype(np.uint8))
    if kind.endswith("jpeg"):
        buffer = io.BytesIO()
        paper.save(buffer, "JPEG", quality=20)
        paper = Image.open(io.BytesIO(buffer.getvalue()))
    with pytest.raises(ImageError, match=r"^paper\.jpg: the image is blank"):
        prepare(paper, "paper.jpg")


def test_per_kind_counts_refused_pictures_as_wrong() -> None:
    manifest = [{"kind": "a", "digit": 1}, {"kind": "a", "digit": 2}, {"kind": "b", "digit": 3}]
    assert per_kind(manifest, [1, None, 3]) == {"a": (1, 2), "b": (1, 1), "all": (2, 3)}

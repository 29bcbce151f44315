"""On-device augmentation (data.augment): images stay valid, labels travel untouched, the draws
are reproducible under the seed, and it is off for validation and test."""

from pathlib import Path

import pytest
import torch

from mnist_lightning.data.augment import AUGMENTS, Augment
from mnist_lightning.data.datamodule import MNISTDataModule, TensorBatches

KINDS = [kind for kind in AUGMENTS if kind != "none"]


def digits(count: int = 64, seed: int = 0) -> torch.Tensor:
    """Black images in [0, 1] with a random blob of ink near the centre, like a digit."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 28, 28)
    images[:, 8:20, 10:18] = torch.rand(count, 12, 8, generator=generator)
    return images


def draw(augment: Augment, images: torch.Tensor, seed: int) -> torch.Tensor:
    return augment(images, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_augmented_images_stay_images_drawn_from_the_seed_and_distort_the_loaders_batches(
    kind: str,
) -> None:
    images, augment = digits(), Augment(kind)
    out = draw(augment, images, 0)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1 and torch.isfinite(out).all()
    changed = (out - images).abs().flatten(1).amax(1) > 1e-3
    assert changed.float().mean() > 0.5  # it does distort most images
    # The ink stays in the picture: moved and bent (elastic: stretched locally), not thrown out.
    ink = out.sum((1, 2)) / images.sum((1, 2))
    assert 0.9 < ink.mean() < 1.1 and ink.min() > 0.4
    assert torch.equal(draw(augment, images, 0), out)
    assert not torch.equal(draw(augment, images, 1), out)
    # In the loader: every batch distorted, its labels kept (a resumed epoch: test_data.py).
    images, labels = (255 * digits(50)).to(torch.uint8), torch.arange(50)
    distorted, plain = (TensorBatches(images, labels, 10, True, 3, a) for a in (augment, None))
    for (xa, ya), (xb, yb) in zip(distorted, plain, strict=True):
        assert torch.equal(ya, yb) and not torch.equal(xa, xb)  # the same images, distorted
    in_order = TensorBatches(images, labels, 50, False, 3, augment)  # no shuffle: one batch
    first = next(iter(in_order))[0]
    in_order.set_epoch(1)
    assert not torch.equal(next(iter(in_order))[0], first)  # another epoch, other distortions


def test_none_and_zero_limits_are_the_identity() -> None:
    images = digits()
    assert draw(Augment("none"), images, 0) is images
    still = Augment("affine", max_shift=0, max_rotation=0, max_scale=0, max_shear=0)
    assert torch.allclose(draw(still, images, 0), images, atol=1e-5)
    calm = Augment("elastic", 0, 0, 0, 0, elastic_alpha=0)
    assert torch.allclose(draw(calm, images, 0), images, atol=1e-5)


def test_translate_moves_whole_pixels_and_affine_stays_within_its_limits() -> None:
    dot = torch.zeros(200, 28, 28)
    dot[:, 14, 18] = 1  # 4 pixels right of the centre
    out = draw(Augment("translate", max_shift=2), dot, 0)
    where = out.flatten(1).argmax(1)
    rows, cols = where // 28 - 14, where % 28 - 18
    assert torch.equal(out.sum((1, 2)), torch.ones(200))  # exact: no blur, nothing lost
    assert rows.abs().max() == 2 and cols.abs().max() == 2
    assert set(rows.tolist()) == {-2, -1, 0, 1, 2}  # every shift happens
    out = draw(Augment("affine", max_shift=1, max_rotation=5, max_scale=0.05, max_shear=5), dot, 0)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    x, y = ((out * axis).sum((1, 2)) / out.sum((1, 2)) for axis in (xs, ys))  # the dot's centre
    assert torch.hypot(x - 18, y - 14).max() < 1 * 2**0.5 + 4 * (0.05 + 0.09 + 0.09) + 0.5


def test_validation_and_test_are_never_augmented(synthetic_mnist: Path) -> None:
    dm = MNISTDataModule(str(synthetic_mnist), source="files", val_size=200, augment="elastic")
    dm.setup()
    assert dm.train_dataloader().augment is dm.augment
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        first_images, _ = next(iter(loader))  # as stored, not distorted
        assert torch.equal(first_images, dm.splits[split][0][: len(first_images)].float() / 255)


def test_max_stroke_is_drawn_within_its_limit_and_only_when_asked() -> None:
    images = torch.zeros(64, 28, 28)
    images[:, 6:22, 12:15] = 1.0  # a 3-pixel-wide bar of full ink: a stroke of known width
    plain, stroked = Augment("translate", max_shift=0), Augment("translate", 0, max_stroke=1.0)
    assert torch.equal(draw(plain, images, 3), images)  # no stroke draw: old runs unchanged
    ink = draw(stroked, images, 3).sum((1, 2)) / images.sum((1, 2))
    # +-1 px of width on a 3-px bar 16 px long: between about 2/3 and 4/3 of the ink
    assert ink.min() >= 2 / 3 - 0.05 and ink.max() <= 4 / 3 + 0.1
    assert ink.min() < 0.9 and ink.max() > 1.1  # both ways, not one
    # data.augment=none data.max_stroke=1: nothing moves, the bar's middle column keeps its ink
    alone = Augment("none", max_stroke=1.0)
    assert alone.enabled and not Augment("none").enabled
    out = draw(alone, images, 4)
    assert not torch.equal(out, images) and torch.equal(out[:, 8:20, 13], images[:, 8:20, 13])

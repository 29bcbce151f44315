"""The data module's split and the in-memory batch loader, on the synthetic MNIST (CPU)."""

from pathlib import Path

import pytest
import torch

from mnist_lightning.data.augment import Augment
from mnist_lightning.data.datamodule import MNISTDataModule, TensorBatches, load_pair
from mnist_lightning.data.datasets import encode_idx, raw_dir
from mnist_lightning.errors import DataError
from tests.helpers.synthetic import SYNTHETIC_TEST, SYNTHETIC_TRAIN, SYNTHETIC_VAL

TRAIN = SYNTHETIC_TRAIN - SYNTHETIC_VAL


def datamodule(data_dir: Path, **kwargs) -> MNISTDataModule:
    """`setup()` without a trainer, so the tensors stay on the CPU."""
    dm = MNISTDataModule(str(data_dir), source="files", **({"val_size": SYNTHETIC_VAL} | kwargs))
    dm.prepare_data()
    dm.setup()
    return dm


def rows(images: torch.Tensor) -> list[bytes]:
    """Each image as bytes, sorted: a multiset that ignores order."""
    return sorted(image.numpy().tobytes() for image in images)


@pytest.mark.parametrize("subset", [None, 1, 137, TRAIN])
def test_train_and_val_partition_the_training_set_and_a_stratified_subset_follow_the_seed(
    subset: int | None, synthetic_mnist: Path
) -> None:
    a, b = (datamodule(synthetic_mnist, seed=1, train_subset=subset) for _ in range(2))
    torch.manual_seed(123)  # the global generator plays no part
    c = datamodule(synthetic_mnist, seed=2, train_subset=subset)
    for name in ("train", "val"):
        assert all(torch.equal(x, y) for x, y in zip(a.splits[name], b.splits[name], strict=True))
        assert rows(a.splits[name][0]) != rows(c.splits[name][0])
    full, size = datamodule(synthetic_mnist, seed=1), subset or TRAIN
    sizes = [(n, n) for n in (size, SYNTHETIC_VAL, SYNTHETIC_TEST)]  # train, val, test
    assert [(len(x), len(y)) for x, y in a.splits.values()] == sizes
    assert all(x.dtype == torch.uint8 and y.dtype == torch.long for x, y in a.splits.values())
    (subset_x, subset_y), (val_x, val_y) = a.splits["train"], a.splits["val"]
    all_x, all_y = load_pair(raw_dir(synthetic_mnist), "train")
    assert len(set(rows(all_x))) == SYNTHETIC_TRAIN  # all distinct: the checks below can bite
    assert rows(torch.cat([full.splits["train"][0], val_x])) == rows(all_x)  # a partition
    assert len(set(rows(subset_x))) == size  # no image twice, and none new:
    assert set(rows(subset_x)) <= set(rows(full.splits["train"][0]))
    label_of = {image.numpy().tobytes(): int(y) for image, y in zip(all_x, all_y, strict=True)}
    for x, y in ((subset_x, subset_y), (val_x, val_y)):
        assert [label_of[image.numpy().tobytes()] for image in x] == y.tolist()
    assert torch.equal(a.splits["test"][0], load_pair(raw_dir(synthetic_mnist), "t10k")[0])
    assert torch.equal(val_x, full.splits["val"][0])  # validation unaffected by the subset
    expected = torch.bincount(full.splits["train"][1], minlength=10) * size / TRAIN
    counts = torch.bincount(subset_y, minlength=10)
    assert (counts - expected).abs().max() <= 1, (counts, expected)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"val_size": SYNTHETIC_TRAIN}, f"data.val_size={SYNTHETIC_TRAIN}"),
        ({"val_size": -5}, "data.val_size=-5"),  # from Python: not a silently wrong split
        ({"train_subset": TRAIN + 1}, f"data.train_subset={TRAIN + 1}"),
    ],
)
def test_bad_sizes_name_the_key_before_a_run_starts(
    synthetic_mnist: Path, tmp_path: Path, kwargs: dict, key: str
) -> None:
    """mnist-train calls check_sizes before anything is written; unfetched: the official count."""
    dm = MNISTDataModule(str(synthetic_mnist), source="files", **({"val_size": 200} | kwargs))
    with pytest.raises(DataError, match=key):
        dm.check_sizes()
    with pytest.raises(DataError, match=key):
        dm.setup()
    with pytest.raises(DataError, match=r"data.val_size=60000 .* 60000 training images"):
        MNISTDataModule(str(tmp_path / "none"), val_size=60_000).check_sizes()


COUNT, BATCH = 103, 10


def loader(count: int = COUNT, seed: int = 3, shuffle: bool = True, **kwargs) -> TensorBatches:
    """Image i is filled with the value i and has label i, so a batch shows which it holds."""
    images = torch.arange(count, dtype=torch.uint8).repeat_interleave(784).reshape(count, 28, 28)
    return TensorBatches(images, torch.arange(count), BATCH, shuffle, seed=seed, **kwargs)


def labels_of(batches: object) -> list[int]:
    return [label for _, y in batches for label in y.tolist()]


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    first = loader()
    order0 = labels_of(first)
    first.set_epoch(1)
    order1 = labels_of(first)
    torch.manual_seed(99)  # the global generator plays no part
    fresh = loader()
    fresh.set_epoch(1)
    assert labels_of(fresh) == order1 != order0  # iterating again does not move it on
    fresh.set_epoch(0)
    assert labels_of(fresh) == order0 != labels_of(loader(seed=4))
    assert labels_of(loader(shuffle=False)) == list(range(COUNT))  # evaluation reads in order


@pytest.mark.parametrize("augment", ["none", "elastic"])  # the distortions drawn again too
@pytest.mark.parametrize("taken", [4, 11, 5], ids=["mid-epoch", "epoch-end", "limit_batches=5"])
def test_a_loaded_state_goes_on_as_the_uninterrupted_loader(taken: int, augment: str) -> None:
    """One taken at an epoch's end starts the next epoch whole, as Lightning sets it first."""
    original = loader(augment=Augment(augment))
    original.set_epoch(1)
    items = iter(original)
    for _ in range(taken):
        next(items)
    fresh = loader(augment=Augment(augment))  # epoch 0 until the state says otherwise
    pending = iter(fresh)  # Lightning makes the iterator first and restores the state after
    fresh.load_state_dict(original.state_dict())
    if taken == 4:
        rest = list(items)
        assert len(rest) == len(original) - 4
        for (xa, ya), (xb, yb) in zip(rest, pending, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for part in (original, fresh):
        part.set_epoch(2)
    assert labels_of(fresh) == labels_of(original) and len(labels_of(fresh)) == COUNT


@pytest.mark.parametrize(
    ("images", "labels", "words"),  # (a pair that fits: the partition test above)
    [
        ((5, 28, 28), [0, 1, 9, 3], r"labels-idx1-ubyte: \(4,\) labels for 5 images in train-im"),
        ((5, 28, 28), [0, 1, 9, 10, 2], "train-labels-idx1-ubyte: label 10 is not a digit 0-9"),
        ((5, 20, 20), [0] * 5, r"train-images-idx3-ubyte: images of shape \(5, 20, 20\), not \(N,"),
        ((0, 28, 28), [], "train-images-idx3-ubyte: holds no images"),
    ],
)
def test_load_pair_refuses_files_that_do_not_fit(
    images: tuple, labels: list, words: str, tmp_path: Path
) -> None:
    (raw := raw_dir(tmp_path)).mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(encode_idx(torch.zeros(images).byte()))
    (raw / "train-labels-idx1-ubyte").write_bytes(encode_idx(torch.tensor(labels).byte()))
    with pytest.raises(DataError, match=words):
        load_pair(raw, "train")


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 7, 103, 240, 241])
def test_processes_share_each_epochs_permutation_once_in_float_batches_with_equal_steps(
    size: int, world: int
) -> None:
    for training in (True, False):
        ranks = [loader(size, rank=r, world_size=world, training=training) for r in range(world)]
        for epoch in (0, 1):
            for part in ranks:
                part.set_epoch(epoch)
            assert all(len(part) == len(list(part)) for part in ranks)  # Lightning's count
            if world == 1:  # full batches, then what is left
                rest = [size % BATCH] if size % BATCH else []
                assert [len(y) for _, y in ranks[0]] == [BATCH] * (size // BATCH) + rest
            for images, labels in (b for part in ranks for b in part):
                assert 0 < len(labels) <= BATCH and images.dtype == torch.float32
                assert torch.equal(images * 255, labels.float()[:, None, None].expand(-1, 28, 28))
            last = size % (BATCH * world)  # too few rows to share: dropped in training
            dropped = last if training and 0 < last < world else 0
            everything = labels_of(b for part in ranks for b in part)
            assert len(set(everything)) == len(everything) == size - dropped  # each row once
        if training:  # every process takes as many steps, which DDP needs
            assert len({len(part) for part in ranks}) == 1

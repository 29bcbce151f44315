"""The data module's split and the in-memory batch loader, on the synthetic MNIST (CPU)."""

from pathlib import Path

import pytest
import torch

from mnist_lightning.data.datamodule import MNISTDataModule, TensorBatches, load_pair, shard
from mnist_lightning.data.datasets import raw_dir, write_idx
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


def test_split_sizes(synthetic_mnist: Path) -> None:
    dm = datamodule(synthetic_mnist)
    sizes = {name: (len(x), len(y)) for name, (x, y) in dm.splits.items()}
    assert sizes == {
        "train": (TRAIN, TRAIN),
        "val": (SYNTHETIC_VAL, SYNTHETIC_VAL),
        "test": (SYNTHETIC_TEST, SYNTHETIC_TEST),
    }
    assert all(x.device.type == "cpu" and x.dtype == torch.uint8 for x, _ in dm.splits.values())
    assert all(y.dtype == torch.long for _, y in dm.splits.values())


def test_train_and_val_partition_the_training_set(synthetic_mnist: Path) -> None:
    dm = datamodule(synthetic_mnist)
    (train_x, train_y), (val_x, val_y) = dm.splits["train"], dm.splits["val"]
    all_x, all_y = load_pair(raw_dir(synthetic_mnist), "train")
    assert len(set(rows(all_x))) == SYNTHETIC_TRAIN  # all distinct: the checks below can bite
    assert not set(rows(train_x)) & set(rows(val_x))
    assert rows(torch.cat([train_x, val_x])) == rows(all_x)
    # Labels travel with their images.
    label_of = {image.numpy().tobytes(): int(y) for image, y in zip(all_x, all_y, strict=True)}
    for x, y in ((train_x, train_y), (val_x, val_y)):
        assert [label_of[image.numpy().tobytes()] for image in x] == y.tolist()
    assert torch.equal(dm.splits["test"][0], load_pair(raw_dir(synthetic_mnist), "t10k")[0])


@pytest.mark.parametrize("subset", [None, 100])
def test_the_split_and_the_subset_are_functions_of_the_seed(
    subset: int | None, synthetic_mnist: Path
) -> None:
    a, b = (datamodule(synthetic_mnist, seed=1, train_subset=subset) for _ in range(2))
    torch.manual_seed(123)  # the global generator plays no part
    c = datamodule(synthetic_mnist, seed=2, train_subset=subset)
    for name in ("train", "val"):
        assert all(torch.equal(x, y) for x, y in zip(a.splits[name], b.splits[name], strict=True))
        assert rows(a.splits[name][0]) != rows(c.splits[name][0])


@pytest.mark.parametrize("size", [1, 10, 137, 500, TRAIN])
def test_train_subset_is_stratified_and_of_the_requested_size(
    size: int, synthetic_mnist: Path
) -> None:
    full = datamodule(synthetic_mnist)
    dm = datamodule(synthetic_mnist, train_subset=size)
    subset_x, subset_y = dm.splits["train"]
    assert len(subset_x) == len(subset_y) == size
    assert set(rows(subset_x)) <= set(rows(full.splits["train"][0]))
    assert len(set(rows(subset_x))) == size  # no image twice
    assert torch.equal(dm.splits["val"][0], full.splits["val"][0])  # validation unaffected
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
    """mnist-train calls check_sizes before its Trainer and loggers write anything; with no
    files yet there is nothing to count, and setup checks once they are fetched."""
    dm = MNISTDataModule(str(synthetic_mnist), source="files", **({"val_size": 200} | kwargs))
    with pytest.raises(DataError, match=key):
        dm.check_sizes()
    with pytest.raises(DataError, match=key):
        dm.setup()
    MNISTDataModule(str(tmp_path / "none"), **({"val_size": 200} | kwargs)).check_sizes()


COUNT, BATCH = 103, 10


def loader(count: int = COUNT, batch_size: int = BATCH, seed: int = 3, **kwargs) -> TensorBatches:
    """Image i is filled with the value i and has label i, so a batch shows which it holds."""
    images = torch.arange(count, dtype=torch.uint8).repeat_interleave(784).reshape(count, 28, 28)
    return TensorBatches(images, torch.arange(count), batch_size, True, seed=seed, **kwargs)


def labels_of(batches: list) -> torch.Tensor:
    return torch.cat([y for _, y in batches])


def test_an_epoch_covers_every_image_once_in_float_batches() -> None:
    batches = list(loader())
    assert len(batches) == len(loader()) == 11
    assert [len(y) for _, y in batches] == [BATCH] * 10 + [3]  # the last batch is partial
    assert sorted(labels_of(batches).tolist()) == list(range(COUNT))
    for images, labels in batches:
        assert images.dtype == torch.float32 and images.shape == (len(labels), 28, 28)
        assert float(images.min()) >= 0 and float(images.max()) <= 1
        assert torch.equal(images * 255, labels.float()[:, None, None].expand(-1, 28, 28))
    assert labels_of(batches).tolist() != list(range(COUNT))  # shuffled


def test_evaluation_batches_are_in_order() -> None:
    images = torch.zeros(25, 28, 28, dtype=torch.uint8)
    batches = list(TensorBatches(images, torch.arange(25), 10, False, seed=0))
    assert labels_of(batches).tolist() == list(range(25))


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    first = loader()
    order0 = labels_of(list(first))
    labels_of(list(first))  # iterating again does not move it on
    assert torch.equal(labels_of(list(first)), order0)
    first.sampler.set_epoch(1)
    order1 = labels_of(list(first))
    assert not torch.equal(order0, order1)

    torch.manual_seed(99)  # the global generator plays no part
    fresh = loader()
    fresh.sampler.set_epoch(1)
    assert torch.equal(labels_of(list(fresh)), order1)
    fresh.sampler.set_epoch(0)
    assert torch.equal(labels_of(list(fresh)), order0)
    assert not torch.equal(labels_of(list(loader(seed=4))), order0)


def test_state_dict_resumes_mid_epoch() -> None:
    original = loader()
    original.sampler.set_epoch(5)
    items = iter(original)
    taken = [next(items) for _ in range(3)]
    state = original.state_dict()
    rest = list(items)
    assert rest  # there is something left to resume

    fresh = loader()  # epoch 0 until the state says otherwise
    fresh.load_state_dict(state)
    again = list(fresh)
    assert len(taken) + len(again) == len(original)
    for (xa, ya), (xb, yb) in zip(rest, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)

    # The next epoch after the resumed one is whole again.
    fresh.sampler.set_epoch(6)
    assert len(list(fresh)) == len(original)


def test_state_loaded_between_iter_and_next_is_honoured() -> None:
    """Lightning creates the iterator first and restores the loader's state after."""
    original = loader()
    items = iter(original)
    for _ in range(4):
        next(items)
    state, rest = original.state_dict(), [y for _, y in items]

    fresh = loader()
    pending = iter(fresh)
    fresh.load_state_dict(state)
    assert [y.tolist() for _, y in pending] == [y.tolist() for y in rest]
    assert len(rest) == len(original) - 4


@pytest.mark.parametrize(
    ("images", "labels", "words"),
    [
        ((5, 28, 28), [0, 1, 9, 3, 2], None),
        (
            (5, 28, 28),
            [0, 1, 9, 3],
            r"labels-idx1-ubyte: \(4,\) labels for 5 images in train-images-idx3-ubyte; they must",
        ),
        ((5, 28, 28), [0, 1, 9, 10, 2], "train-labels-idx1-ubyte: label 10 is not a digit 0-9"),
        (
            (5, 20, 20),
            [0, 1, 9, 3, 2],
            r"train-images-idx3-ubyte: images of shape \(5, 20, 20\), not \(N, 28, 28\)",
        ),
        ((0, 28, 28), [], "train-images-idx3-ubyte: holds no images"),
    ],
)
def test_load_pair_checks_the_files_fit(
    images: tuple, labels: list, words: str | None, tmp_path: Path
) -> None:
    raw = raw_dir(tmp_path)
    write_idx(raw / "train-images-idx3-ubyte", torch.zeros(images, dtype=torch.uint8))
    write_idx(raw / "train-labels-idx1-ubyte", torch.tensor(labels, dtype=torch.uint8))
    if words is None:
        assert load_pair(raw, "train")[1].tolist() == labels
        return
    with pytest.raises(DataError, match=words):
        load_pair(raw, "train")


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 7, 103, 240, 241])
def test_shards_cover_an_epoch_once_with_equal_steps(size: int, world_size: int) -> None:
    batch = 10
    train = [shard(size, batch, rank, world_size, training=True) for rank in range(world_size)]
    assert len({len(sizes) for _, sizes in train}) == 1  # every process takes as many steps
    seen = torch.cat([positions for positions, _ in train]).tolist()
    assert len(seen) == len(set(seen))  # no row twice
    last = size % (batch * world_size)
    dropped = last if 0 < last < world_size else 0  # documented: too few rows to share
    assert sorted(seen) == list(range(size - dropped))
    for positions, sizes in train:
        assert sum(sizes) == len(positions) and all(0 < n <= batch for n in sizes)

    evaluation = [
        shard(size, batch, rank, world_size, training=False) for rank in range(world_size)
    ]
    assert sorted(torch.cat([p for p, _ in evaluation]).tolist()) == list(range(size))


def test_processes_read_disjoint_shards_of_the_same_permutation() -> None:
    ranks = [loader(rank=rank, world_size=2, training=True) for rank in range(2)]
    for epoch in (0, 1):
        labels = []
        for part in ranks:
            part.sampler.set_epoch(epoch)
            labels.append(torch.cat([y for _, y in part]))
        assert not set(labels[0].tolist()) & set(labels[1].tolist())
        assert sorted(torch.cat(labels).tolist()) == list(range(COUNT))
        assert len(ranks[0]) == len(ranks[1]) == 6  # 103 rows / (10 x 2)


@pytest.mark.parametrize("taken", [11, 5], ids=["whole-epoch", "limit_train_batches=5"])
def test_the_state_at_an_epochs_end_starts_the_next_one_whole(taken: int) -> None:
    """A checkpoint at an epoch's end (after all 11 batches, or after 5 when Lightning's
    limit_train_batches ends the epoch early): resuming from it starts the next epoch at its
    first batch, the same batches an uninterrupted run reads."""
    original = loader()
    original.sampler.set_epoch(1)
    items = iter(original)
    for _ in range(taken):
        next(items)
    fresh = loader()
    fresh.load_state_dict(original.state_dict())
    fresh.sampler.set_epoch(2)  # as Lightning does at the next epoch's start
    original.sampler.set_epoch(2)
    assert [y.tolist() for _, y in fresh] == [y.tolist() for _, y in original]

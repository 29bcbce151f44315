from pathlib import Path

import pytest
import torch

from mnist_lightning.data import MNISTDataModule, TensorBatches, load_pair
from mnist_lightning.download import raw_dir
from mnist_lightning.errors import DataError
from mnist_lightning.idx import write_idx


def datamodule(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(str(data_dir), source="files", val_size=200, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def as_set(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_split_sizes_and_disjointness(synthetic_mnist: Path) -> None:
    dm = datamodule(synthetic_mnist)
    (train_x, _), (val_x, _), (test_x, _) = (dm.splits[s] for s in ("train", "val", "test"))
    assert (len(train_x), len(val_x), len(test_x)) == (1000, 200, 300)
    all_train, _ = load_pair(raw_dir(synthetic_mnist), "train")
    assert as_set(train_x) | as_set(val_x) == as_set(all_train)
    assert not as_set(train_x) & as_set(val_x)


def test_split_depends_on_the_seed_only(synthetic_mnist: Path) -> None:
    a, b = datamodule(synthetic_mnist, seed=1), datamodule(synthetic_mnist, seed=1)
    c = datamodule(synthetic_mnist, seed=2)
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])


def test_train_subset_is_stratified(synthetic_mnist: Path) -> None:
    dm = datamodule(synthetic_mnist, train_subset=137)
    _, labels = dm.splits["train"]
    full = datamodule(synthetic_mnist).splits["train"][1]
    assert len(labels) == 137
    expected = torch.bincount(full, minlength=10).float() * 137 / len(full)
    assert (torch.bincount(labels, minlength=10).float() - expected).abs().max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"val_size": 1200}, "data.val_size"), ({"train_subset": 5000}, "data.train_subset")],
)
def test_bad_sizes_name_the_key(synthetic_mnist: Path, kwargs: dict, key: str) -> None:
    dm = MNISTDataModule(str(synthetic_mnist), source="files", **({"val_size": 200} | kwargs))
    with pytest.raises(DataError, match=key):
        dm.setup()


def loader(count: int = 103, batch_size: int = 10, group: int | None = None) -> TensorBatches:
    images = torch.arange(count, dtype=torch.uint8).repeat_interleave(784).reshape(count, 28, 28)
    return TensorBatches(images, torch.arange(count), batch_size, True, seed=3, group=group)


def test_each_epoch_covers_every_image_once() -> None:
    batches = list(loader())
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(103))
    images, labels = batches[0]
    assert images.dtype == torch.float32 and images.shape == (10, 28, 28)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert torch.equal(images[:, 0, 0] * 255, labels.float())  # images travel with labels


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    first, again, other = loader(), loader(), loader()
    other.sampler.set_epoch(1)
    order = torch.cat([y for _, y in first])
    assert torch.equal(order, torch.cat([y for _, y in again]))
    assert not torch.equal(order, torch.cat([y for _, y in other]))


def test_grouped_batches_are_the_same_batches() -> None:
    plain = [y for _, y in loader()]
    grouped = [y for group in loader(group=4) for _, y in group]
    assert len(loader(group=4)) == 3
    assert all(torch.equal(a, b) for a, b in zip(plain, grouped, strict=True))


def test_state_dict_resumes_mid_epoch() -> None:
    original = loader(group=2)
    original.sampler.set_epoch(5)
    items = iter(original)
    taken = [next(items) for _ in range(3)]
    state = original.state_dict()
    rest = list(items)

    resumed = loader(group=2)
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(taken) + len(again) == len(original)
    for a, b in zip(rest, again, strict=True):
        assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_mismatched_files_are_reported(tmp_path: Path) -> None:
    raw = raw_dir(tmp_path)
    write_idx(raw / "train-images-idx3-ubyte", torch.zeros(5, 28, 28, dtype=torch.uint8))
    write_idx(raw / "train-labels-idx1-ubyte", torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(DataError, match="one label per image"):
        load_pair(raw, "train")
    write_idx(raw / "train-labels-idx1-ubyte", torch.full((5,), 12, dtype=torch.uint8))
    with pytest.raises(DataError, match="not a digit"):
        load_pair(raw, "train")
    write_idx(raw / "train-images-idx3-ubyte", torch.zeros(5, 20, 20, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"\(N, 28, 28\)"):
        load_pair(raw, "train")

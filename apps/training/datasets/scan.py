"""Scan a dataset: list its files, count and hash every byte, tell its format, and read the
first records of its main file.

A directory's files are listed in sorted relative-path order. Symlinks are followed only
when their target stays inside the confinement; links leaving it, links to directories and
special files (sockets, FIFOs, devices) are left out and counted in ``skipped``.
"""

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.training.datasets.confinement import Confinement
from apps.training.datasets.formats import file_format, main_format
from apps.training.datasets.preview import preview_read, storable

CHUNK_BYTES = 1 << 20
SNIFF_BYTES = 64 * 1024

Progress = Callable[[float], None]


class ScanError(Exception):
    """The scan could not read the dataset; the message says where and why."""

    def __str__(self) -> str:
        return storable(super().__str__())


@dataclass(frozen=True)
class DataFile:
    relative: str  # its path inside the dataset, "/"-separated (the file name for one file)
    path: Path  # where to read it (a link's resolved target)
    size: int


@dataclass
class Listing:
    files: list[DataFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ScanResult:
    size_bytes: int
    file_count: int
    sha256: str
    format: str
    preview: dict[str, Any]
    skipped: int


def _entry(path: Path, relative: str, confinement: Confinement, listing: Listing) -> None:
    """Add the file at ``path`` to ``listing``, or count it as skipped."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not confinement.contains(target):
            listing.skipped.append(relative)
            return
        path = target
    info = path.stat()
    if stat.S_ISREG(info.st_mode):
        listing.files.append(DataFile(relative, path, info.st_size))
    else:
        listing.skipped.append(relative)


def _walk_error(error: OSError) -> None:
    raise ScanError(f"Cannot read {error.filename}: {error.strerror}.")


def files_list(top: Path, confinement: Confinement) -> Listing:
    """The files of the dataset at ``top`` (a file or a directory), sorted by relative path."""
    real = Path(os.path.realpath(top))
    if not confinement.contains(real):
        raise ScanError(f"{top} now resolves to {real}, outside the allowed roots.")
    listing = Listing()
    try:
        if not real.is_dir():
            _entry(real, real.name, confinement, listing)
            return listing
        for folder, dirs, names in os.walk(real, onerror=_walk_error):
            base = Path(folder)
            prefix = base.relative_to(real).as_posix()
            prefix = "" if prefix == "." else prefix + "/"
            for name in dirs:
                if (base / name).is_symlink():
                    listing.skipped.append(prefix + name)
            for name in names:
                _entry(base / name, prefix + name, confinement, listing)
    except FileNotFoundError as error:
        raise ScanError(f"{error.filename or top} disappeared during the scan.") from None
    except OSError as error:
        raise ScanError(f"Cannot read {error.filename or top}: {error.strerror}.") from None
    listing.files.sort(key=lambda f: f.relative)
    listing.skipped.sort()
    return listing


class _Meter:
    """Bytes read so far, reported as a fraction of the expected total."""

    def __init__(self, total: int, progress: Progress) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.progress = progress

    def add(self, count: int) -> None:
        self.done += count
        self.progress(min(self.done / self.total, 0.99))


def file_digest(path: Path, meter: _Meter) -> tuple[str, int, bytes]:
    """The file's SHA-256, the bytes read and its first ``SNIFF_BYTES``, reading it once."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    head = b""
    read = 0
    with open(path, "rb", buffering=0) as source:
        while count := source.readinto(buffer):
            if read == 0:
                head = bytes(view[: min(count, SNIFF_BYTES)])
            digest.update(view[:count])
            read += count
            meter.add(count)
    return digest.hexdigest(), read, head


def scan(top: Path, confinement: Confinement, progress: Progress | None = None) -> ScanResult:
    """Size, file count, checksum, format and preview of the dataset at ``top``.

    ``progress`` gets the fraction done (0..1) after every chunk read; ScanError when the
    dataset cannot be read.
    """
    listing = files_list(top, confinement)
    meter = _Meter(sum(f.size for f in listing.files), progress or (lambda fraction: None))
    combined = hashlib.sha256()
    formats: dict[str, list[tuple[DataFile, int]]] = {}
    size = 0
    single = ""
    for data_file in listing.files:
        try:
            digest, read, head = file_digest(data_file.path, meter)
        except FileNotFoundError:
            raise ScanError(f"{data_file.relative} disappeared during the scan.") from None
        except OSError as error:
            raise ScanError(f"Cannot read {data_file.relative}: {error.strerror}.") from None
        size += read
        single = digest
        line = f"{data_file.relative}\0{digest}\n"
        combined.update(line.encode("utf-8", "surrogateescape"))
        fmt = file_format(data_file.relative, head, read)
        if fmt is not None:
            formats.setdefault(fmt, []).append((data_file, read))
    is_file = not Path(os.path.realpath(top)).is_dir()
    if is_file and not listing.files:
        raise ScanError(f"{top} is no longer a regular file.")
    fmt, shown = main_format({name: sum(r for _, r in files) for name, files in formats.items()})
    preview: dict[str, Any] = {}
    if shown is not None:
        first = formats[shown][0][0]
        preview = {"file": storable(first.relative), **preview_read(first.path, shown)}
    if len(formats) > 1:
        preview["formats"] = {name: len(files) for name, files in sorted(formats.items())}
    if progress is not None:
        progress(1.0)
    return ScanResult(
        size_bytes=size,
        file_count=len(listing.files),
        sha256=single if is_file else combined.hexdigest(),
        format=fmt,
        preview=preview,
        skipped=len(listing.skipped),
    )

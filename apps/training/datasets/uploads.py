"""Uploaded files on disk: a safe file name, streaming into a staging file under a size
limit, moving it into its version's directory, and removing it again."""

import contextlib
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path

MAX_NAME_CHARS = 200
STAGING = ".incoming"
UNSAFE = re.compile(r"[^\w.+=@,()-]+")


class UploadTooLarge(ValueError):
    """The upload went past its limit; nothing of it is left on disk."""


def file_name_clean(raw: str) -> str:
    """The name an upload is stored under: its last path component, with characters other
    than letters, digits and ``._-+=@,()`` replaced, no leading dot, at most 200 characters."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = UNSAFE.sub("_", name.strip()).lstrip(".")
    if len(name) > MAX_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 20:
            name = stem[: MAX_NAME_CHARS - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_NAME_CHARS]
    return name or "upload"


def upload_stage(chunks: Iterable[bytes], upload_dir: Path, max_bytes: int) -> Path:
    """Write ``chunks`` to a new staging file under ``upload_dir``, durably; UploadTooLarge
    (and the partial file removed) as soon as they exceed ``max_bytes``."""
    staging = upload_dir / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=staging, prefix="upload-")
    path = Path(name)
    try:
        written = 0
        with os.fdopen(descriptor, "wb") as target:
            for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise UploadTooLarge(f"more than {max_bytes} bytes")
                target.write(chunk)
            target.flush()
            os.fsync(target.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def upload_place(staged: Path, destination: Path) -> None:
    """Move a staged upload to where its version keeps it (same file system: a rename)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, destination)
    destination.chmod(0o644)


def upload_remove(path: Path, upload_dir: Path) -> None:
    """Remove an uploaded version's directory (the parent of ``path``) and the parents it
    leaves empty, never anything outside ``upload_dir``."""
    folder = Path(os.path.realpath(path.parent))
    if not folder.is_relative_to(upload_dir) or folder == upload_dir:
        return
    if folder.name == STAGING:
        path.unlink(missing_ok=True)
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == upload_dir or not parent.is_relative_to(upload_dir):
            break
        with contextlib.suppress(OSError):
            parent.rmdir()

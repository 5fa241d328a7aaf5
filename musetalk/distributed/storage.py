"""Where batch inputs and outputs live: local or shared paths, or fsspec URLs (``s3://`` through s3fs,
``gs://``, ``memory://``, ...), all through fsspec.

Remote inputs are copied to a worker-local folder before dubbing; outputs are made locally and committed
with one upload to a temporary name beside the target, then one rename, so readers never see a partial
file and a re-run treats an existing target as finished.
"""
from __future__ import annotations

import os
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import MuseTalkError, VideoError
from ..video.io import make_writable_output


class StorageError(MuseTalkError):
    """A storage URL cannot be reached, read or written."""


def is_url(path: str) -> bool:
    """True for ``scheme://...`` (``file://`` included), False for a plain path."""
    return "://" in path


def resolve(path: str, base: Path) -> str:
    """A CSV cell as the workers see it: URLs unchanged, plain paths made absolute against ``base``."""
    path = path.strip()
    return path if is_url(path) else str((base / path).resolve())


def _filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path of ``url``."""
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {url}: {exc} (install the fsspec driver for its scheme, "
                           f"e.g. s3fs for s3://)") from None


def _failure(url: str, exc: Exception) -> StorageError:
    reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return StorageError(f"cannot reach {url}: {reason}; check the URL, the network and the credentials")


def exists(url: str) -> bool:
    """Whether ``url`` (a path or an fsspec URL) names an existing file."""
    fs, path = _filesystem(url)
    try:
        return fs.isfile(path)
    except OSError as exc:
        raise _failure(url, exc) from None


def local_input(url: str, folder: Path, prefix: str) -> Path:
    """A local path to read ``url`` from: the path itself when local, else a copy ``folder/PREFIX-NAME``."""
    fs, path = _filesystem(url)
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    copy = folder / f"{prefix}-{Path(path).name}"
    try:
        fs.get_file(path, str(copy))
    except FileNotFoundError:
        raise StorageError(f"input not found: {url}; check the jobs CSV") from None
    except OSError as exc:
        raise _failure(url, exc) from None
    return copy


def make_writable(url: str, key: str) -> None:
    """Refuse ``url`` before its dub when it cannot be written: a local path's missing folders are made and
    a file is created beside it and removed; elsewhere an empty ``.NAME.KEY.probe`` is put beside it and
    removed (a bad scheme, an unreachable or read-only bucket fail here, not after the work)."""
    fs, path = _filesystem(url)
    if isinstance(fs, LocalFileSystem):
        try:
            make_writable_output(path)
        except VideoError as exc:
            raise StorageError(str(exc)) from None
        return
    parent, name = os.path.split(path)
    probe = f"{parent}/.{name}.{key}.probe" if parent else f".{name}.{key}.probe"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except (OSError, NotImplementedError) as exc:
        raise _failure(url, exc) from None


def commit(local: Path, url: str, key: str) -> None:
    """Put ``local`` at ``url`` atomically: upload to ``.NAME.KEY.part`` beside it, then rename. ``key``
    names the attempt's task, so a retry overwrites (not leaves) the part of an attempt that died."""
    fs, path = _filesystem(url)
    parent, name = os.path.split(path)
    part = f"{parent}/.{name}.{key}.part" if parent else f".{name}.{key}.part"
    try:
        if isinstance(fs, LocalFileSystem) and not os.path.isdir(parent or "."):
            raise StorageError(f"cannot write {url}: folder {parent} does not exist")
        fs.put_file(str(local), part)
        fs.mv(part, path)
    except OSError as exc:
        raise _failure(url, exc) from None


def remove(url: str, recursive: bool = False) -> None:
    """Delete ``url`` (a folder with ``recursive``), if it is there."""
    fs, path = _filesystem(url)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=recursive)
    except OSError as exc:
        raise _failure(url, exc) from None


def join(url: str, name: str) -> str:
    """``url`` + ``/`` + ``name`` (a path or a URL)."""
    return f"{url.rstrip('/')}/{name}"

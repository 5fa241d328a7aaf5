"""Staging: an avatar is written into a hidden folder, then swapped in place of the old one at once."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


class Staging:
    """``with Staging(root, name) as folder:`` write the files into ``folder``; on success it replaces
    ``root/name`` (readers holding memory maps of the old files keep them), on error it is deleted."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.tmp = root / f".{name}.tmp-{os.getpid()}-{time.monotonic_ns()}"

    def __enter__(self) -> Path:
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        final = self.root / self.name
        trash = self.root / f".{self.name}.old-{time.monotonic_ns()}"
        if final.exists():
            final.rename(trash)
        self.tmp.rename(final)
        shutil.rmtree(trash, ignore_errors=True)

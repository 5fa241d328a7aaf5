"""Batch storage through fsspec: local paths, file:// and memory:// URLs, unreachable URLs fail in one line."""
from __future__ import annotations

import fsspec
import pytest

from musetalk.distributed import storage
from musetalk.distributed.storage import StorageError


def test_paths_resolve_against_the_csv_folder_and_urls_stay(tmp_path):
    assert storage.resolve(" a/b.mp4 ", tmp_path) == str(tmp_path / "a" / "b.mp4")
    assert storage.resolve("s3://bucket/b.mp4", tmp_path) == "s3://bucket/b.mp4"


@pytest.mark.parametrize("scheme", ["file://", "memory://"])
def test_commit_is_atomic_and_reads_back(tmp_path, scheme):
    root = f"{scheme}{tmp_path}" if scheme == "file://" else f"memory://{tmp_path.name}"
    url = storage.join(root, "out.mp4")
    local = tmp_path / "made.mp4"
    local.write_bytes(b"frames")
    assert not storage.exists(url)
    storage.commit(local, url, "row1")
    assert storage.exists(url)
    fs, path = fsspec.core.url_to_fs(root)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == (
        ["made.mp4", "out.mp4"] if scheme == "file://" else ["out.mp4"])
    copy = storage.local_input(url, tmp_path, "source")
    assert copy.read_bytes() == b"frames"
    assert copy == (tmp_path / "out.mp4" if scheme == "file://" else tmp_path / "source-out.mp4")


def test_missing_remote_input_names_the_url(tmp_path):
    with pytest.raises(StorageError, match=r"^input not found: memory://nowhere/x.mp4; check the jobs CSV$"):
        storage.local_input("memory://nowhere/x.mp4", tmp_path, "source")


@pytest.mark.parametrize("url, reason", [
    ("nosuch://host/x.mp4", r"^cannot open nosuch://host/x.mp4: Protocol not known: nosuch \(install the fsspec"),
    ("http://127.0.0.1:9/x.mp4", r"^cannot reach http://127.0.0.1:9/x.mp4: .*check the URL, the network"),
])
def test_unreachable_storage_is_one_line(tmp_path, url, reason):
    with pytest.raises(StorageError, match=reason) as info:
        storage.local_input(url, tmp_path, "source")
    assert "\n" not in str(info.value)

"""Fingerprints of prepared avatars: what their data depends on, and why a stored avatar is stale.

The fingerprint covers the source file's content, the model version and VAE weights, the crop/mask
settings and the storage format; an avatar whose fingerprint no longer matches must be prepared again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .format import FORMAT


def file_digest(path: Path) -> str:
    """sha256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(mt) -> dict:
    """What the cached latents depend on: the UNet version and a digest of the VAE encoder weights."""
    h = hashlib.sha256()
    state = mt.vae.state_dict()
    for key in ("encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight"):
        h.update(state[key].detach().float().cpu().numpy().tobytes())
    return {"version": mt.version, "vae": h.hexdigest()[:16]}


def fingerprint(source_digest: str, model: dict, settings, mask_source: str) -> str:
    """16 hex digits identifying an avatar's data (``settings``: resolved PrepareSettings)."""
    blob = json.dumps({"format": FORMAT, "source": source_digest, "model": model,
                       "settings": dataclasses.asdict(settings), "mask": mask_source}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stale_reason(meta: dict, model: dict, mask_source: str) -> str | None:
    """Why the avatar described by ``meta`` no longer fits this model and mask source, or None."""
    if meta.get("format") != FORMAT:
        return f"format {meta.get('format')} != {FORMAT}"
    if meta.get("model") != model:
        return f"prepared for model {meta.get('model')}, loaded {model}"
    if meta.get("mask") != mask_source:
        return f"{meta.get('mask')} blend masks, this server makes {mask_source} ones"
    src = meta["source"]
    path = Path(src["path"])
    try:
        stat = path.stat()
    except OSError:
        return None  # the prepared data stays self-consistent without its source
    if (stat.st_size, stat.st_mtime_ns) != (src["size"], src["mtime_ns"]) and file_digest(path) != src["sha256"]:
        return f"source {path} changed"
    return None

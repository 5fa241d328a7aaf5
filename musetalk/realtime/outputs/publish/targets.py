"""Where a channel pushes: a URL (or a file path) checked once and turned into a :class:`Target`.

- ``rtmp://`` / ``rtmps://``: FLV (H.264 + AAC), what streaming platforms, OBS, SRS and nginx-rtmp take;
- ``udp://host:port`` / ``tcp://host:port``: MPEG-TS (what SRT gateways and OBS take);
- ``http(s)://...``: a WHIP endpoint (WebRTC publishing, aiortc as the client);
- a path ending ``.flv``, ``.ts`` or ``.mp4``: a local recording (written beside, renamed when complete);
- ``srt://``: refused (the FFmpeg inside PyAV's wheel has no libsrt).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ....errors import MuseTalkError

FILE_FORMATS = {".flv": "flv", ".ts": "mpegts", ".mp4": "mp4"}
NETWORK_FORMATS = {"rtmp": "flv", "rtmps": "flv", "udp": "mpegts", "tcp": "mpegts"}
WHIP_SCHEMES = ("http", "https")


class PublishError(MuseTalkError):
    """A channel cannot be set up or its push failed for good (a bad URL, --once and an unreachable ingest)."""


@dataclass(frozen=True)
class Target:
    """A checked destination. ``kind``: "stream" (a muxed network push), "file" or "whip"; ``format``: the
    FFmpeg muxer ("flv", "mpegts", "mp4"; None for WHIP)."""

    url: str
    kind: str
    format: str | None

    @property
    def reconnects(self) -> bool:
        """Whether a fault is retried (network pushes) rather than fatal (a file)."""
        return self.kind != "file"


def parse_target(url: str) -> Target:
    """The :class:`Target` of ``url``; raises :class:`PublishError` (one line) for anything unsupported."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "srt":
        raise PublishError(f"cannot push to {url}: this FFmpeg build (PyAV's wheel) has no SRT (libsrt); push "
                           f"MPEG-TS to udp://HOST:PORT or tcp://HOST:PORT of an SRT gateway (e.g. srt-live-transmit, "
                           f"MediaMTX), or use rtmp://")
    if scheme in NETWORK_FORMATS:
        if not parts.hostname or (scheme in ("udp", "tcp") and parts.port is None):
            need = "rtmp://HOST[:PORT]/APP/KEY" if scheme.startswith("rtmp") else f"{scheme}://HOST:PORT"
            raise PublishError(f"cannot push to {url}: no host{'' if scheme.startswith('rtmp') else ' or port'}; "
                               f"write it as {need}")
        return Target(url, "stream", NETWORK_FORMATS[scheme])
    if scheme in WHIP_SCHEMES:
        if not parts.hostname:
            raise PublishError(f"cannot push to {url}: no host; write the WHIP endpoint as http(s)://HOST[:PORT]/PATH")
        return Target(url, "whip", None)
    if "://" in url:
        raise PublishError(f"cannot push to {url}: unsupported scheme {scheme}://; use rtmp://, rtmps://, udp://, "
                           f"tcp://, http(s)://.../whip or a .flv/.ts/.mp4 file")
    return _file_target(url)


def _file_target(path_text: str) -> Target:
    path = Path(path_text)
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PublishError(f"cannot record to {path_text}: unknown file type {path.suffix or '(none)'}; end the name "
                           f"with .flv, .ts or .mp4, or give an rtmp://, udp://, tcp:// or http(s):// URL")
    folder = path.parent
    if not folder.is_dir():
        raise PublishError(f"cannot record to {path_text}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise PublishError(f"cannot record to {path_text}: folder {folder} is not writable; choose another")
    return Target(str(path), "file", fmt)

"""The WebRTC settings of a server that need no WebRTC library: ICE servers (STUN, TURN) and the video bit rate.

ICE servers come from ``--ice-server URL`` (repeatable; ``stun:``, ``turn:`` or ``turns:``, the TURN ones
with ``--turn-user``/``--turn-credential``) or ``$MUSETALK_ICE_SERVERS``: a JSON list of the browser's
``RTCIceServer`` objects (``{"urls": "turn:host:3478", "username": "u", "credential": "p"}``). The server
configures its peer connections with them and hands them to the page (``GET /ice``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ...errors import MuseTalkError

ENV_VAR = "MUSETALK_ICE_SERVERS"
SCHEMES = ("stun:", "turn:", "turns:")
# Chosen from bench/realtime.py's WebRTC section (docs/webrtc.md): 720p H.264 at this rate keeps the
# mouth region above 35 dB PSNR while speaking; aiortc's receiver estimate lowers it, never above.
DEFAULT_VIDEO_KBPS = 1000
DEFAULT_CONNECT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class IceServer:
    """One ``RTCIceServer``: ``urls`` (stun:/turn:/turns:), with ``username``/``credential`` for TURN."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def as_json(self) -> dict:
        """The browser's ``RTCIceServer`` object."""
        out: dict = {"urls": list(self.urls)}
        if self.username is not None:
            out.update(username=self.username, credential=self.credential)
        return out


@dataclass(frozen=True)
class WebRTCSettings:
    """video_kbps: the video encoder's target (and ceiling) in kbit/s; ice_servers: handed to every peer
    connection and the page; connect_timeout_s: a session whose ICE/DTLS does not connect by then is
    released (its capacity returned)."""

    video_kbps: int = DEFAULT_VIDEO_KBPS
    ice_servers: tuple[IceServer, ...] = ()
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not 50 <= self.video_kbps <= 20000:
            raise MuseTalkError(f"--video-kbps must be in [50, 20000] kbit/s, got {self.video_kbps}")
        if self.connect_timeout_s <= 0:
            raise MuseTalkError(f"the WebRTC connect timeout must be positive, got {self.connect_timeout_s} s")


def ice_servers(urls: list[str], username: str | None = None, credential: str | None = None,
                env: str | None = None) -> tuple[IceServer, ...]:
    """The ICE servers of ``--ice-server`` ``urls`` (TURN ones with ``username``/``credential``), then
    those of ``env`` (the JSON of ``$MUSETALK_ICE_SERVERS``); :class:`MuseTalkError` in one line for a bad one."""
    servers = []
    for url in urls:
        _check_url(url, "--ice-server")
        turn = not url.startswith("stun:")
        if turn and (username is None or credential is None):
            raise MuseTalkError(f"--ice-server {url} is a TURN server: give --turn-user and --turn-credential")
        servers.append(IceServer((url,), username if turn else None, credential if turn else None))
    if env:
        servers.extend(_from_json(env))
    return tuple(servers)


def _check_url(url: str, where: str) -> None:
    if not isinstance(url, str) or not url.startswith(SCHEMES) or len(url) <= 6:
        raise MuseTalkError(f"{where}: an ICE server URL starts with stun:, turn: or turns:, got {url!r}")


def _from_json(text: str) -> list[IceServer]:
    where = f"${ENV_VAR}"
    try:
        items = json.loads(text)
    except ValueError:
        raise MuseTalkError(f"{where} must be JSON: a list of {{\"urls\", \"username\", \"credential\"}}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MuseTalkError(f"{where} must be a JSON list of objects with \"urls\" (and TURN's username, credential)")
    servers = []
    for item in items:
        urls = item.get("urls")
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not urls:
            raise MuseTalkError(f"{where}: every ICE server needs \"urls\", got {json.dumps(item)[:80]}")
        for url in urls:
            _check_url(url, where)
        username, credential = item.get("username"), item.get("credential")
        if any(not u.startswith("stun:") for u in urls) and not (isinstance(username, str) and isinstance(credential, str)):
            raise MuseTalkError(f"{where}: the TURN server {urls[0]} needs a \"username\" and a \"credential\"")
        servers.append(IceServer(tuple(urls), username, credential))
    return servers

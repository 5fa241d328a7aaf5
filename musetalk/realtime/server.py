"""HTTP + WebSocket server for real-time avatars (FastAPI; run with uvicorn, see ``musetalk serve``).

- ``GET /``: the browser page (static/index.html); ``GET /static/...``: its scripts.
- ``GET /health``: 200 ``{"status": "ok", "version", "device", "sessions", "speaking", "capacity", "load",
  "free", "avatars"}`` (capacity: speaking sessions admitted; load: 0..1 share in use; free: a new speaking
  session would be admitted).
- ``GET /metrics``: Prometheus text (:mod:`.web.metrics`).
- ``GET /avatars``: list of ``{"name", "fps", "width", "height", "num_frames", "faces", "source_name", "created"}``.
- ``GET /avatars/{name}/poster.jpg``: the avatar's first source frame (JPEG), for the page to show at once.
- ``POST /avatars`` (multipart: ``file`` video or photo, ``name``, optional ``max_frames``, ``replace``): the
  body is limited to ``--max-upload-mb`` (413 beyond, from Content-Length or while receiving) and spooled to
  disk; an existing avatar, or one being prepared, is replaced only with ``replace=true`` (409 otherwise); a
  malformed form, name or extension gets 400. Refusals are JSON ``{"type": "error", "message"}``. Accepted
  uploads are prepared in the background, one at a time (the store's lock), pausing while any session speaks
  (live sessions first, :mod:`.engine.priority`); the reply streams the progress
  as NDJSON lines ``{"type": "progress", "stage", "done", "total"}``, then ``{"type": "done", "avatar": {...}}``
  or ``{"type": "error", "message"}`` (a failed replacement leaves the old avatar as it was). The
  preparation goes on if the client leaves.
- ``GET /avatars/{name}/status``: ``{"name", "state": "preparing" | "ready" | "failed"}`` plus the last
  ``stage``/``done``/``total``, the ``avatar`` or the ``message``; 404 for a name never uploaded nor prepared.
- Access (:mod:`musetalk.realtime.web.access`): with a token, everything but ``/``, ``/static/*`` and ``/health``
  needs ``?token=`` or ``Authorization: Bearer`` (401, or the ``error`` message and close 1008 on a
  WebSocket); WebSockets and POSTs from a foreign ``Origin`` get 403 / 1008.
- ``WS /ws/{avatar}``: the streaming protocol of :mod:`.outputs.ws`.
- ``POST /whep/{avatar}``, ``DELETE /whep/{avatar}/{id}``, ``GET /ice``: WebRTC sessions (:mod:`.outputs.webrtc`),
  when aiortc is installed (the ``webrtc`` extra).
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import MuseTalkError
from .web.access import AccessGuard, AccessPolicy
from .avatars.store import AvatarStore
from .avatars.routes import DEFAULT_MAX_UPLOAD_MB, avatar_router
from .engine.engine import Engine
from .web.metrics import WebRTCCollector, engine_registry
from .outputs.control import Voice
from .outputs.ice import WebRTCSettings
from .outputs.ws import register as register_ws

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "web" / "static"


def create_app(store: AvatarStore, engine: Engine, access: AccessPolicy = AccessPolicy(),
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, *, synthesizer=None,
               webrtc: WebRTCSettings | None = WebRTCSettings()) -> FastAPI:
    """The application serving ``store``'s avatars through ``engine`` (which must encode JPEG), guarded by
    ``access`` (token, origins), taking uploads up to ``max_upload_mb``; ``say`` messages are spoken by
    ``synthesizer`` (a :class:`musetalk.speech.Synthesizer`; default: the bundled voice, loaded on first use);
    WebRTC sessions with ``webrtc``'s settings when aiortc is installed (None: none)."""
    if not engine.jpeg_quality:
        raise MuseTalkError("the server sends JPEG frames: create the Engine with a jpeg_quality")
    app = FastAPI(title="MuseTalk real-time avatars")
    registry = engine_registry(engine)
    app.state.metrics = registry  # outputs beside the sessions (published channels) add their collectors
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(AccessGuard, policy=access)
    app.include_router(avatar_router(store, max_upload_mb, turn=engine.background.wait_turn))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "version": engine.mt.version, "device": str(engine.mt.device),
                **engine.health(), "avatars": len(store.names())}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    voice = Voice(synthesizer)
    register_ws(app, store, engine, voice)
    if webrtc is not None and importlib.util.find_spec("aiortc") is not None:
        from .outputs.webrtc import register as register_webrtc

        register_webrtc(app, store, engine, webrtc, voice)
        registry.register(WebRTCCollector(app.state.webrtc_peers, app.state.rest_streams))
    elif webrtc is not None:
        log.info("WebRTC off: aiortc is not installed (pip install 'musetalk[webrtc]')")
    return app

"""HTTP + WebSocket server for real-time avatars (FastAPI; run with uvicorn, see ``musetalk serve``).

- ``GET /``: the browser page (static/index.html); ``GET /static/...``: its scripts.
- ``GET /health``: 200 ``{"status": "ok", "version", "device", "sessions", "speaking", "capacity", "load",
  "free", "avatars"}`` (capacity: speaking sessions admitted; load: 0..1 share in use; free: a new speaking
  session would be admitted).
- ``GET /metrics``: Prometheus text (:mod:`.metrics`).
- ``GET /avatars``: list of ``{"name", "fps", "width", "height", "num_frames", "faces", "source_name", "created"}``.
- ``POST /avatars`` (multipart: ``file`` video or photo, ``name``, optional ``max_frames``): prepares it and
  streams progress as NDJSON lines ``{"type": "progress", "stage", "done", "total"}``, then
  ``{"type": "done", "avatar": {...}}`` or ``{"type": "error", "message"}``.
- ``WS /ws/{avatar}``: the streaming protocol of :mod:`.ws`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

from fastapi import FastAPI, File, Form, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import MuseTalkError
from .avatar import AvatarStore, PrepareSettings, check_name
from .engine import Engine
from .metrics import engine_registry
from .ws import register as register_ws

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


def create_app(store: AvatarStore, engine: Engine) -> FastAPI:
    """The application serving ``store``'s avatars through ``engine`` (which must encode JPEG)."""
    if not engine.jpeg_quality:
        raise MuseTalkError("the server sends JPEG frames: create the Engine with a jpeg_quality")
    app = FastAPI(title="MuseTalk real-time avatars")
    registry = engine_registry(engine)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    prepare_lock = asyncio.Lock()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "version": engine.mt.version, "device": str(engine.mt.device),
                **engine.health(), "avatars": len(store.names())}

    @app.get("/avatars")
    async def avatars() -> list[dict]:
        return store.list()

    @app.post("/avatars")
    async def upload(file: UploadFile = File(...), name: str = Form(...), max_frames: int | None = Form(None)):
        try:
            check_name(name)
            path = store.upload_path(name, file.filename or "")
        except MuseTalkError as exc:
            return JSONResponse({"type": "error", "message": str(exc)}, status_code=400)
        with open(path, "wb") as out:
            await asyncio.to_thread(shutil.copyfileobj, file.file, out)
        settings = PrepareSettings(max_frames=max_frames)
        return StreamingResponse(_prepare_events(store, path, name, settings, prepare_lock),
                                 media_type="application/x-ndjson")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    register_ws(app, store, engine)
    return app


async def _prepare_events(store: AvatarStore, path: Path, name: str, settings: PrepareSettings,
                          lock: asyncio.Lock):
    """NDJSON lines of the preparation's progress, then its outcome."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def progress(stage: str, done: int, total: int) -> None:
        loop.call_soon_threadsafe(events.put_nowait, {"type": "progress", "stage": stage, "done": done,
                                                      "total": total})

    async with lock:
        task = asyncio.create_task(asyncio.to_thread(store.prepare, path, name, settings, progress, True))
        while not (task.done() and events.empty()):
            getter = asyncio.create_task(events.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield json.dumps(getter.result()) + "\n"
            else:
                getter.cancel()
        try:
            avatar = task.result()
        except MuseTalkError as exc:
            yield json.dumps({"type": "error", "message": str(exc)}) + "\n"
            return
    yield json.dumps({"type": "done", "avatar": avatar.info()}) + "\n"
